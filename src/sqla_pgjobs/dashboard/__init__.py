"""A web dashboard for the job schema: :func:`create_app`, a Starlette (ASGI) app to serve
(``pgjobs dashboard``) or mount in your own (``app.mount("/jobs", create_app(engine))``).

Needs the ``dashboard`` extra: ``pip install 'sqla-pgjobs[dashboard]'``.
"""

from __future__ import annotations

from sqla_pgjobs.errors import MissingExtraError

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - the dev extra has them
    raise MissingExtraError("The dashboard", "dashboard", exc.name or "starlette") from exc

from sqla_pgjobs.dashboard.actions import ACTIONS
from sqla_pgjobs.dashboard.app import create_app

__all__ = ["ACTIONS", "create_app"]
