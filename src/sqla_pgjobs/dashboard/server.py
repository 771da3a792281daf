"""Serving the dashboard with uvicorn: in the foreground (``pgjobs dashboard``) or in a
thread beside other work (``pgjobs demo --dashboard``, the browser tests' pattern)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from sqla_pgjobs.errors import MissingExtraError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["BackgroundServer", "serve"]


def _uvicorn() -> object:
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - the dashboard extra has it
        raise MissingExtraError("Serving the dashboard", "dashboard", "uvicorn") from exc
    return uvicorn


def serve(app: ASGIApp, *, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM."""
    _uvicorn()
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


class BackgroundServer:
    """``app`` served by uvicorn in a daemon thread; :meth:`stop` ends it."""

    def __init__(self, app: ASGIApp, *, host: str, port: int) -> None:
        _uvicorn()
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.host = host
        self.port = port

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the dashboard could not listen on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
