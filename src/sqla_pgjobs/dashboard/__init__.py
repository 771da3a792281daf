"""A web dashboard for the job schema: :func:`create_app`, a Starlette (ASGI) app to serve
(``pgjobs dashboard``) or mount in your own (``app.mount("/jobs", create_app(engine))``).

Needs the ``dashboard`` extra: ``pip install 'sqla-pgjobs[dashboard]'``.
"""

from __future__ import annotations

from sqla_pgjobs.dashboard.actions import ACTIONS
from sqla_pgjobs.dashboard.app import create_app

__all__ = ["ACTIONS", "create_app"]
