"""clawback: cut the Claude API bill and prove every dollar saved."""

from typing import TYPE_CHECKING, Any

from clawback.api import ApiError, Usage
from clawback.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from clawback.gathering import agather, gather
    from clawback.sdk import wrap

__version__ = "0.1.0"

__all__ = ["ApiError", "ConfigError", "Settings", "Usage", "__version__", "agather", "gather", "load_settings", "wrap"]


def __getattr__(name: str) -> Any:
    """``clawback.wrap`` is imported on first use: it needs the ``sdk`` extra (anthropic), the gateway does not."""
    if name == "wrap":
        from clawback.sdk import wrap

        return wrap
    if name in ("gather", "agather"):
        from clawback import gathering as module

        return getattr(module, name)
    raise AttributeError(f"module 'clawback' has no attribute {name!r}")
