"""The dashboard's ASGI application: :func:`create_app`.

Pages are rendered on the server (Jinja2, autoescaped) and refreshed by htmx, which is
vendored with the stylesheet in ``static/``: the app loads nothing from another host and
sends ``Content-Security-Policy: default-src 'self'`` (no inline script or style anywhere).
Links are built with ``request.url_for``, so the app works mounted under any prefix.

Reads run in a transaction with a ``statement_timeout`` (a payload filter on a huge table
is stopped, not left running); actions are POSTs with a CSRF token and a confirmation
step, refused in read-only mode and whenever ``authorize`` says no.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sqla_pgjobs import admin
from sqla_pgjobs import validation as check
from sqla_pgjobs.dashboard import actions, charts, queries
from sqla_pgjobs.dashboard.csrf import COOKIE, FIELD, CsrfTokens
from sqla_pgjobs.database import create_job_engine, on_schema
from sqla_pgjobs.errors import InvalidArgumentError
from sqla_pgjobs.schema import DEFAULT_SCHEMA

if TYPE_CHECKING:
    import uuid
    from collections.abc import Callable, Iterator, Mapping

    from sqlalchemy.engine import URL, Connection
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SECURITY_HEADERS", "create_app"]

HERE = Path(__file__).parent

#: Sent with every response. No inline script or style is allowed, and nothing from
#: another host; forms post only to the dashboard; no page may frame it.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]

#: A bulk action takes at most this many jobs of the filter at once (oldest first).
BULK_LIMIT = 10_000


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- Formatting for the templates -----------------------------------------------------------


def _timestamp(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | timedelta | None) -> str:
    if seconds is None:
        return "—"
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if seconds < 0.001:
        return "< 1 ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _short_json(value: Any, length: int = 80) -> str:
    shown = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return shown if len(shown) <= length else shown[: length - 1] + "…"


def _first_line(value: str | None, length: int = 90) -> str:
    """An error's first line (its message; the traceback is on the job's page)."""
    line = (value or "").strip().split("\n", 1)[0]
    return line if len(line) <= length else line[: length - 1] + "…"


def _number(value: int) -> str:
    return f"{value:,}"


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        timestamp=_timestamp,
        duration=_duration,
        pretty_json=_pretty_json,
        short_json=_short_json,
        first_line=_first_line,
        number=_number,
    )
    return environment


# --- The app ----------------------------------------------------------------------------------


@dataclass
class _Dashboard:
    engine: Engine
    read_only: bool
    authorize: Callable[[Request, str], bool] | None
    tenant: uuid.UUID | None
    tokens: CsrfTokens
    refresh_seconds: int
    statement_timeout_ms: int
    templates: jinja2.Environment

    # --- plumbing ---

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            # One round trip: the timeout, and for reads a read-only transaction.
            settings = [func.set_config("statement_timeout", str(self.statement_timeout_ms), True)]
            if not write:
                settings.append(func.set_config("transaction_read_only", "on", True))
            connection.execute(select(*settings))
            yield connection

    def read(self, reader: Callable[[Connection], Any]) -> Any:
        return self._run(reader, write=False)

    def write(self, writer: Callable[[Connection], Any]) -> Any:
        return self._run(writer, write=True)

    def _run(self, work: Callable[[Connection], Any], *, write: bool) -> Any:
        try:
            with self._transaction(write=write) as connection:
                return work(connection)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == "57014":
                raise HTTPException(
                    503,
                    f"The query ran longer than the dashboard's statement timeout "
                    f"({self.statement_timeout_ms} ms) and was stopped: narrow the filter "
                    "(a task, a queue or a time range) and try again.",
                ) from None
            raise

    def allowed(self, request: Request, action: str) -> bool:
        if action != "view" and self.read_only:
            return False
        if self.authorize is None:
            return True
        return bool(self.authorize(request, action))

    def check(self, request: Request, action: str) -> None:
        if action != "view" and self.read_only:
            raise HTTPException(403, "This dashboard is read-only: actions are refused.")
        if not self.allowed(request, action):
            raise HTTPException(403, f"You may not {action.replace('_', ' ')} here.")

    def csrf_token(self, request: Request) -> tuple[str, bool]:
        """The request's token and whether it is new (to be set as the cookie)."""
        cookie = request.cookies.get(COOKIE)
        if cookie and self.tokens.valid(cookie):
            return cookie, False
        return self.tokens.new(), True

    def render(
        self, request: Request, name: str, context: Mapping[str, Any], status: int = 200
    ) -> HTMLResponse:
        token, new = self.csrf_token(request)
        cache: dict[str, bool] = {}

        def can(action: str) -> bool:
            if action not in cache:
                cache[action] = self.allowed(request, action)
            return cache[action]

        def url(route: str, params: Mapping[str, Any] | None = None, **path: Any) -> str:
            # A path from the root (the mount's prefix included), without the host: the
            # Host header does not reach the links, and they work behind a proxy.
            address = request.url_for(route, **path)
            if params:
                address = address.include_query_params(**params)
            return address.path + (f"?{address.query}" if address.query else "")

        page = self.templates.get_template(name).render(
            request=request,
            url=url,
            can=can,
            csrf_field=FIELD,
            csrf_token=token,
            read_only=self.read_only,
            tenant=self.tenant,
            refresh_seconds=self.refresh_seconds,
            job_actions=actions.JOB_ACTIONS,
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        response.headers["cache-control"] = "no-store"
        if new:
            response.set_cookie(
                COOKIE,
                token,
                path=request.scope.get("root_path") or "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    # --- pages ---

    def overview(self, request: Request) -> Response:
        self.check(request, "view")
        data = self.read(lambda c: queries.overview(c, self.tenant))
        context = {
            "data": data,
            "throughput": charts.throughput_chart(data.buckets),
            "failure_rate": charts.failure_rate_chart(data.buckets),
            "wait": charts.wait_chart(data.buckets),
            "page": "overview",
        }
        live = request.headers.get("hx-request") == "true"
        return self.render(request, "_overview_live.html" if live else "overview.html", context)

    def _filter(self, params: Mapping[str, str], *, finished: bool) -> queries.JobFilter:
        """The filter of a page's query or an action's form, within the dashboard's tenant."""
        f = queries.parse_filter(params, finished=finished)
        if self.tenant is not None and f.tenant not in (None, self.tenant):
            raise queries.BadInput(
                "tenant", str(f.tenant), "this dashboard shows and acts on one tenant only"
            )
        return f

    def jobs(self, request: Request) -> Response:
        self.check(request, "view")
        f = self._filter(request.query_params, finished=False)
        result = self.read(lambda c: queries.live_jobs(c, f, self.tenant))
        return self.render(
            request,
            "jobs.html",
            {"f": f, "result": result, "page": "jobs", "states": admin.STATES},
        )

    def history(self, request: Request) -> Response:
        self.check(request, "view")
        f = self._filter(request.query_params, finished=True)
        result = self.read(lambda c: queries.finished_jobs(c, f, self.tenant))
        return self.render(
            request,
            "history.html",
            {"f": f, "result": result, "page": "history", "outcomes": check.OUTCOMES},
        )

    def job(self, request: Request) -> Response:
        self.check(request, "view")
        job_id = request.path_params["job_id"]
        detail = None
        if job_id < 2**63:
            detail = self.read(lambda c: queries.job_detail(c, job_id, self.tenant))
        if detail is None:
            raise HTTPException(
                404, f"There is no job {job_id} (finished jobs whose history was pruned are gone)."
            )
        return self.render(request, "job.html", {"job": detail, "page": "jobs"})

    def workers(self, request: Request) -> Response:
        self.check(request, "view")
        rows = self.read(lambda c: queries.workers(c, self.tenant))
        return self.render(request, "workers.html", {"rows": rows, "page": "workers"})

    def schedules(self, request: Request) -> Response:
        self.check(request, "view")
        rows = self.read(lambda c: queries.schedules(c, self.tenant))
        return self.render(request, "schedules.html", {"rows": rows, "page": "schedules"})

    def queues(self, request: Request) -> Response:
        self.check(request, "view")
        rows, estimated = self.read(lambda c: queries.queues(c, self.tenant))
        return self.render(
            request,
            "queues.html",
            {"rows": rows, "estimated": estimated, "page": "queues"},
        )

    # --- actions ---

    async def act(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in actions.ACTIONS:
            raise HTTPException(404, f"There is no action {action!r}.")
        self.check(request, action)
        form = await request.form()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        if not self.tokens.accepts(request.cookies.get(COOKIE), fields.get(FIELD)):
            raise HTTPException(
                403,
                "The form's CSRF token is missing or does not match: reload the page and try "
                "again (the dashboard needs its cookie).",
            )
        return await run_in_threadpool(self._act, request, action, fields)

    def _act(self, request: Request, action: str, fields: dict[str, str]) -> Response:
        confirmed = fields.get("confirmed") == "yes"
        scope = fields.get("scope", "job")
        hidden = {k: v for k, v in fields.items() if k not in (FIELD, "confirmed")}
        base = {"action": action, "label": _label(action), "hidden": hidden, "page": ""}
        if action in actions.QUEUE_ACTIONS:
            if self.tenant is not None:
                raise HTTPException(
                    403,
                    "A dashboard limited to one tenant cannot pause or resume queues: "
                    "queues are shared by every tenant.",
                )
            queue = check.check_name("queue", fields.get("queue"))
            assert queue is not None
            if not confirmed:
                what = f"Queue {queue} will {actions.EXPLAINED[action]}."
                back = _Back("queues")
                return self.render(
                    request, "confirm.html", {**base, "what": what, "count": 1, "back": back}
                )
            summary = self.write(lambda c: actions.on_queue(c, action, queue))
            return self.render(request, "done.html", {**base, "summary": summary})
        if scope == "filter":
            f = self._filter(fields, finished=False)
            ids = self.read(lambda c: queries.matching_ids(c, f, self.tenant, cap=BULK_LIMIT))
            described = ", ".join(f"{k} = {v}" for k, v in f.params().items()) or "no filter"
            back = _Back("jobs", f.params())
        elif scope == "history":
            if action != "retry":
                raise queries.BadInput("scope", scope, "finished jobs can only be retried")
            f = self._filter(fields, finished=True)
            ids = self.read(lambda c: queries.finished_ids(c, f, self.tenant, cap=BULK_LIMIT))
            back = _Back("history", f.params())
            described = "finished, " + (
                ", ".join(f"{k} = {v}" for k, v in f.params().items()) or "no filter"
            )
        elif scope == "job":
            raw = fields.get("job_id", "")
            try:
                ids = [check.check_id("job_id", int(raw))]
            except (ValueError, InvalidArgumentError):
                raise queries.BadInput(
                    "job_id", raw, "it must be a job id (a positive whole number)"
                ) from None
            ids = self.read(lambda c: queries.owned_ids(c, ids, self.tenant))
            if not ids:
                raise HTTPException(404, f"There is no job {raw}.")
            described = f"job {ids[0]}"
            back = _Back("job", path={"job_id": ids[0]})
        else:
            raise queries.BadInput("scope", scope, "it must be job, filter or history")
        if not confirmed:
            what = (
                f"{len(ids):,} job{'s' if len(ids) != 1 else ''} ({described}) will "
                f"{actions.EXPLAINED[action]}."
            )
            if len(ids) == BULK_LIMIT:
                what += f" At most {BULK_LIMIT:,} jobs are acted on at once: repeat for more."
            return self.render(
                request, "confirm.html", {**base, "what": what, "count": len(ids), "back": back}
            )
        summary = self.write(lambda c: actions.on_jobs(c, action, ids))
        return self.render(request, "done.html", {**base, "summary": summary})

    async def error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, InvalidArgumentError):
            status, message = 400, f"Bad input: {exc}"
        elif isinstance(exc, HTTPException):
            status, message = exc.status_code, str(exc.detail)
            if exc.headers:
                return Response(message, status_code=status, headers=exc.headers)
        else:  # pragma: no cover - Starlette routes only the types registered below
            raise exc
        return await run_in_threadpool(
            self.render,
            request,
            "error.html",
            {"status": status, "message": message, "page": ""},
            status,
        )


@dataclass(frozen=True)
class _Back:
    """Where a confirmation page's "Cancel" leads: the page the action came from."""

    route: str
    params: dict[str, str] = field(default_factory=dict)
    path: dict[str, Any] = field(default_factory=dict)


def _label(action: str) -> str:
    return {**actions.JOB_ACTIONS, **actions.QUEUE_ACTIONS}[action]


def create_app(
    engine_or_url: Engine | str | URL,
    *,
    schema: str = DEFAULT_SCHEMA,
    read_only: bool = False,
    authorize: Callable[[Request, str], bool] | None = None,
    tenant: uuid.UUID | str | None = None,
    secret_key: str | bytes | None = None,
    refresh_seconds: int = 5,
    statement_timeout: timedelta = timedelta(seconds=5),
) -> Starlette:
    """The dashboard as a Starlette (ASGI) app, to serve (``pgjobs dashboard``) or mount
    (``app.mount("/jobs", create_app(engine))``).

    ``engine_or_url``: an Engine (its pool is shared with your app) or a database URL.
    ``schema``: the job schema's name. ``read_only``: no action buttons, every POST
    refused (403). ``authorize(request, action)``: asked before every page (``"view"``)
    and action (see :data:`sqla_pgjobs.dashboard.actions.ACTIONS`); False gives 403.
    ``tenant``: show and act on that tenant's jobs only. ``secret_key`` signs the CSRF
    tokens (random per app when None: give one when several processes serve the
    dashboard). ``refresh_seconds``: how often the overview refreshes itself (0: never).
    ``statement_timeout``: the longest a page's query may run.
    """
    if isinstance(engine_or_url, Engine):
        engine = on_schema(engine_or_url, schema)
    else:
        engine = create_job_engine(engine_or_url, schema)
    tenant_id = check.check_tenant("tenant", tenant)
    timeout_ms = int(statement_timeout.total_seconds() * 1000)
    if timeout_ms < 1:
        raise InvalidArgumentError(
            "statement_timeout", statement_timeout, "it must be at least 1 ms"
        )
    if (
        isinstance(refresh_seconds, bool)
        or not isinstance(refresh_seconds, int)
        or refresh_seconds < 0
    ):
        raise InvalidArgumentError(
            "refresh_seconds", refresh_seconds, "it must be a whole number of seconds, 0 or more"
        )
    dashboard = _Dashboard(
        engine=engine,
        read_only=read_only,
        authorize=authorize,
        tenant=tenant_id,
        tokens=CsrfTokens(secret_key),
        refresh_seconds=refresh_seconds,
        statement_timeout_ms=timeout_ms,
        templates=_environment(),
    )
    routes = [
        Route("/", dashboard.overview, name="overview"),
        Route("/jobs", dashboard.jobs, name="jobs"),
        Route("/jobs/{job_id:int}", dashboard.job, name="job"),
        Route("/history", dashboard.history, name="history"),
        Route("/workers", dashboard.workers, name="workers"),
        Route("/schedules", dashboard.schedules, name="schedules"),
        Route("/queues", dashboard.queues, name="queues"),
        Route("/actions/{action}", dashboard.act, methods=["POST"], name="act"),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: dashboard.error,
            InvalidArgumentError: dashboard.error,
        },
    )
    app.state.dashboard = dashboard
    app.add_middleware(_SecurityHeaders)
    return app
