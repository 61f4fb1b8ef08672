"""Starting the dashboard: ``streamlit run`` on ``clawback/dashboard/app.py`` in a child process.

A child process rather than Streamlit's in-process bootstrap (an internal API that changes between releases):
``python -m streamlit run`` is the interface Streamlit documents. The ledger URL and the configuration file
reach the script through the environment (``CLAWBACK_LEDGER__URL``, ``CLAWBACK_DASHBOARD_CONFIG_PATH``), never
the command line, so a password in a URL does not show in ``ps``. Usage statistics are off (this machine, and
many deployments, have no network beyond the gateway's upstream).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from clawback.config import ConfigError, Settings

__all__ = ["CONFIG_ENV", "LOCAL_HOSTS", "DashboardProcess", "check_exposure", "streamlit_command"]

#: The configuration file the Streamlit script loads (the script runs in a child process).
CONFIG_ENV = "CLAWBACK_DASHBOARD_CONFIG_PATH"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
APP_PATH = Path(__file__).with_name("app.py")


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond localhost without a login."""
    host = settings.dashboard.host
    if host not in LOCAL_HOSTS and settings.dashboard.password is None:
        raise ConfigError(
            f"dashboard.host is {host!r}, beyond localhost: set dashboard.password (or CLAWBACK_DASHBOARD__PASSWORD) "
            "so that the dashboard asks for a login, or listen on 127.0.0.1"
        )


def streamlit_command(host: str, port: int, app: Path = APP_PATH) -> list[str]:
    """``app`` is the Streamlit script (another one only for ``benchmarks/dashboard_bench.py --render-only``,
    which times an earlier version of the page beside this one)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def _environment(settings: Settings, config: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["CLAWBACK_LEDGER__URL"] = settings.ledger.url
    if settings.dashboard.password is not None:
        env["CLAWBACK_DASHBOARD__PASSWORD"] = settings.dashboard.password.get_secret_value()
    if config is not None:
        env[CONFIG_ENV] = str(config.resolve())
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


class DashboardProcess:
    """The dashboard in a child process: ``start()`` waits until Streamlit answers its health check."""

    def __init__(self, settings: Settings, config: Path | None = None, app: Path = APP_PATH) -> None:
        check_exposure(settings)
        self.settings = settings
        self.config = config
        self.app = app
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.dashboard.host}:{self.settings.dashboard.port}"

    def start(self, timeout: float = 60.0, *, quiet: bool = True) -> DashboardProcess:
        d = self.settings.dashboard
        out = subprocess.DEVNULL if quiet else None
        self.process = subprocess.Popen(
            streamlit_command(d.host, d.port, self.app),
            env=_environment(self.settings, self.config),
            stdout=out,
            stderr=out,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the dashboard exited with status {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/_stcore/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the dashboard did not answer on {self.url} within {timeout:.0f} s")
            time.sleep(0.1)

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> DashboardProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
