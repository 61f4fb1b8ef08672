"""clawback: cut the Claude API bill and prove every dollar saved."""

from clawback.api import ApiError, Usage
from clawback.config import ConfigError, Settings, load_settings

__version__ = "0.1.0"

__all__ = ["ApiError", "ConfigError", "Settings", "Usage", "__version__", "load_settings"]
