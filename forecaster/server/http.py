"""The HTTP side of the service: the read-only dashboard (and its one write, the stop button).

Served by aiohttp on `http_port`, in the same asyncio process and event loop as the gRPC server;
every read goes through the engine, on the engine's executor (a fit or a store read never
blocks the loop). Pages are rendered by forecaster/dashboard/pages.py.

Who may see what is decided as on the gRPC side: the request's token ("Authorization: Bearer
<token>", or the cookie the login form or `?token=` sets) resolves to a tenant with the service's
Authenticator (server/auth.py), and every read goes through `TenantEngine` (forecaster/tenancy.py),
so a page never shows, and the stop button never reaches, another tenant's study.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from forecaster.dashboard import pages
from forecaster.engine import Engine
from forecaster.errors import ForecasterError, InvalidArgumentError, StartingError
from forecaster.server.auth import Authenticator
from forecaster.store import RunState
from forecaster.tenancy import Tenant, TenantEngine

log = logging.getLogger("forecaster.http")
T = TypeVar("T")

TOKEN_COOKIE = "forecaster_token"
# Forecast paths drawn per study page: the running runs' fans beyond this are left out.
MAX_FANS = 30
PATH_POINTS = 40


def bearer_of(request: web.Request) -> str | None:
    """The caller's "Bearer <token>": the Authorization header, else the login cookie."""
    header = request.headers.get("Authorization", "")
    if header:
        return header
    cookie = request.cookies.get(TOKEN_COOKIE, "")
    return f"Bearer {cookie}" if cookie else None


@dataclass
class Dashboard:
    """The dashboard's handlers. Each request sees the engine as its caller's tenant does
    (forecaster.tenancy), the tenant resolved from its token as the gRPC side resolves it
    (server/auth.py): a page never shows another tenant's study."""

    engine_of: Callable[[], Engine | None]  # None while the service still loads its models
    executor: Executor
    auth: Authenticator
    refresh_s: float

    @property
    def token_set(self) -> bool:  # whether a login form makes sense at all
        return self.auth.required

    def tenant(self, request: web.Request) -> Tenant | None:
        return self.auth.tenant_for(bearer_of(request))

    def scope(self, request: web.Request) -> TenantEngine:
        engine = self.engine_of()
        if engine is None:
            raise StartingError("the service is starting (loading its learned models); retry.")
        return TenantEngine(engine, self.auth.require(bearer_of(request)))

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self.executor, ctx.run, fn, *args)

    # -- pages ------------------------------------------------------------------------------

    async def studies(self, request: web.Request) -> web.Response:
        rows = await self._call(self._study_rows, self.scope(request))
        return _page(pages.studies_page(rows, refresh_s=self.refresh_s))

    def _study_rows(self, scope: TenantEngine) -> list[pages.StudyRow]:
        rows = []
        for study in scope.all_studies():
            runs = scope.all_runs(study.name)
            counts = {state: sum(r.state is state for r in runs) for state in RunState}
            saved = 0
            for r in runs:
                budget = r.spec.max_step or study.spec.max_step
                if r.state is RunState.STOPPED and budget:
                    saved += max(budget - max(r.last_step, 0), 0)
            rows.append(pages.StudyRow(study, counts, saved))
        return rows

    async def study(self, request: web.Request) -> web.Response:
        name = _required(request, "name")
        log_steps = request.query.get("log") == "1"
        study, plots, incumbent = await self._call(
            self._study_plots, self.scope(request), name, None
        )
        return _page(
            pages.study_page(study, plots, incumbent, log_steps=log_steps, refresh_s=self.refresh_s)
        )

    def _study_plots(
        self, scope: TenantEngine, name: str, only: str | None
    ) -> tuple[Any, list[pages.RunPlot], float | None]:
        study = scope.get_study(name)
        summaries = scope.run_summaries(name, only=only)
        plots = []
        fans = 0
        for s in summaries:
            path = None
            if s.forecast is not None and fans < MAX_FANS:
                try:
                    _, path = scope.forecast(name, s.run.name, path_points=PATH_POINTS)
                    fans += 1
                except ForecasterError:
                    path = None
            plots.append(pages.RunPlot(s, scope.points(name, s.run.name), path))
        return study, plots, scope.incumbent(name)

    async def run(self, request: web.Request) -> web.Response:
        study_name, run_name = _required(request, "study"), _required(request, "run")
        log_steps = request.query.get("log") == "1"

        scope = self.scope(request)

        def read() -> tuple[Any, pages.RunPlot, Any, float | None]:
            study, plots, incumbent = self._study_plots(scope, study_name, run_name)
            history = scope.decision_history(study_name, run_name)
            return study, plots[0], history, incumbent

        study, plot, history, incumbent = await self._call(read)
        return _page(
            pages.run_page(
                study,
                plot,
                history,
                plot.summary.incumbent if plot.summary.incumbent is not None else incumbent,
                log_steps=log_steps,
                refresh_s=self.refresh_s,
                can_stop=scope.allow_manual_stop,
                message=request.query.get("message", ""),
            )
        )

    async def stop(self, request: web.Request) -> web.Response:
        form = await request.post()
        study, run = str(form.get("study", "")), str(form.get("run", ""))
        note = str(form.get("note", "")) or "from the dashboard"
        if not study or not run:
            raise InvalidArgumentError("the stop form needs a study and a run.")
        await self._call(self.scope(request).stop_run, study, run, note)
        raise web.HTTPSeeOther(pages.run_url(study, run))

    async def login_form(self, request: web.Request) -> web.Response:
        return _page(pages.login_page(_safe_next(request.query.get("next", "/"))))

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", ""))
        target = _safe_next(str(form.get("next", "/")))
        return _signed_in(target, token)


def _page(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _required(request: web.Request, key: str) -> str:
    value = request.query.get(key, "")
    if not value:
        raise InvalidArgumentError(f"the page needs ?{key}=...")
    return value


def _safe_next(target: str) -> str:
    """Only a path on this site: a login never sends the browser elsewhere."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/"):
        return "/"
    return target


def _signed_in(target: str, token: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": target})
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


_STATUS = {
    "NotFoundError": 404,
    "InvalidArgumentError": 400,
    "FailedPreconditionError": 409,
    "AlreadyExistsError": 409,
    "StartingError": 503,
    "UnauthenticatedError": 401,
}


def build_app(dashboard: Dashboard) -> web.Application:
    """The routes, behind the access check and an error page for the engine's errors."""

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/login":
            return await handler(request)
        token = request.query.get("token")
        if token is not None and request.method == "GET":
            # ?token=... signs in: the cookie is set and the token leaves the address bar.
            rest = {k: v for k, v in request.query.items() if k != "token"}
            target = request.path + (f"?{urlencode(rest)}" if rest else "")
            return _signed_in(target, token)
        if dashboard.tenant(request) is None:
            message = "sign in with the service's token" if dashboard.token_set else "denied"
            if request.cookies.get(TOKEN_COOKIE):
                message = "that token is not this service's: sign in again"
            return _page(pages.login_page(str(request.rel_url), message), status=401)
        try:
            return await handler(request)
        except ForecasterError as e:
            status = _STATUS.get(type(e).__name__, 500)
            body = f"<h1>{status}</h1><p>{_escape(str(e))}</p>"
            return _page(pages.layout("forecaster: error", body, refresh_s=0), status=status)

    app = web.Application(middlewares=[guard])
    app.add_routes(
        [
            web.get("/", dashboard.studies),
            web.get("/study", dashboard.study),
            web.get("/run", dashboard.run),
            web.post("/stop", dashboard.stop),
            web.get("/login", dashboard.login_form),
            web.post("/login", dashboard.login),
        ]
    )
    return app


def _escape(text: str) -> str:
    import html

    return html.escape(text)


@dataclass
class HttpSide:
    """A started HTTP server and what closes it."""

    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_http(
    engine_of: Callable[[], Engine | None],
    executor: Executor,
    *,
    host: str,
    port: int,
    auth: Authenticator,
    refresh_s: float,
    shared: bool = False,
) -> HttpSide:
    """Starts the dashboard on host:port, its callers resolved to tenants by auth. shared: the
    service's processes all serve the port (SO_REUSEPORT), each reading the one database."""
    app = build_app(Dashboard(engine_of, executor, auth, refresh_s))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=shared)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(
            f"cannot serve the dashboard on {host}:{port} ({e.strerror}): is the port in use? "
            "Choose another with --http-port (FORECASTER_HTTP_PORT), or 0 for no dashboard."
        ) from e
    bound = port
    for address in runner.addresses:  # the bound (host, port, ...) of each listening socket
        bound = int(address[1])
        break
    log.info("dashboard", extra={"fields": {"address": f"{host}:{bound}"}})
    return HttpSide(runner, bound)
