"""The HTTP side of the service: the read-only dashboard (and its one write, the stop button).

Served by aiohttp on `http_port`, in the same asyncio process and event loop as the gRPC server;
every read goes through the engine, on the engine's executor (a fit or a store read never
blocks the loop). Pages are rendered by forecaster/dashboard/pages.py.

Who may see a page is decided in one place, `http_authorized`: with a token, a request needs
it as "Authorization: Bearer <token>" or in the cookie the login form (or `?token=`) sets.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import logging
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from forecaster.dashboard import pages
from forecaster.engine import Engine
from forecaster.errors import ForecasterError, InvalidArgumentError
from forecaster.judging import incumbent_of, standing_of
from forecaster.store import RunState

log = logging.getLogger("forecaster.http")
T = TypeVar("T")

TOKEN_COOKIE = "forecaster_token"
# Forecast paths drawn per study page: the running runs' fans beyond this are left out.
MAX_FANS = 30
PATH_POINTS = 40

Authorize = Callable[[web.Request], bool]


def http_authorized(request: web.Request, token: str) -> bool:
    """The HTTP side's one access check (the gRPC side's is TokenAuthInterceptor): no token
    configured, or the request carries it as a bearer header or in the login cookie."""
    if not token:
        return True
    expected = token.encode()
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and hmac.compare_digest(
        header.removeprefix("Bearer ").encode(), expected
    ):
        return True
    cookie = request.cookies.get(TOKEN_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), expected)


@dataclass
class Dashboard:
    """The dashboard's handlers over one engine."""

    engine: Engine
    executor: Executor
    authorize: Authorize
    refresh_s: float
    token_set: bool  # whether a login form makes sense at all

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        return await loop.run_in_executor(self.executor, ctx.run, fn, *args)

    # -- pages ------------------------------------------------------------------------------

    async def studies(self, request: web.Request) -> web.Response:
        rows = await self._call(self._study_rows)
        return _page(pages.studies_page(rows, refresh_s=self.refresh_s))

    def _study_rows(self) -> list[pages.StudyRow]:
        rows = []
        for study in self.engine.list_studies():
            runs = self.engine.list_runs(study.name)
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
        study, plots, incumbent = await self._call(self._study_plots, name, None)
        return _page(
            pages.study_page(study, plots, incumbent, log_steps=log_steps, refresh_s=self.refresh_s)
        )

    def _study_plots(
        self, name: str, only: str | None
    ) -> tuple[Any, list[pages.RunPlot], float | None]:
        study = self.engine.get_study(name)
        summaries = self.engine.run_summaries(name, only=only)
        plots = []
        fans = 0
        for s in summaries:
            path = None
            if s.forecast is not None and fans < MAX_FANS:
                try:
                    _, path = self.engine.forecast(name, s.run.name, path_points=PATH_POINTS)
                    fans += 1
                except ForecasterError:
                    path = None
            plots.append(pages.RunPlot(s, self.engine.points(name, s.run.name), path))
        return study, plots, self._incumbent(name)

    def _incumbent(self, name: str) -> float | None:
        """The study's best final value, observed or forecast: the line a run must beat."""
        study = self.engine.get_study(name)
        decisions = self.engine.store.list_decisions(name)
        standings = [
            standing_of(r, r.spec.max_step or study.spec.max_step, decisions.get(r.name))
            for r in self.engine.list_runs(name)
        ]
        value = incumbent_of(study.spec.direction, standings)
        return value if value is not None and math.isfinite(value) else None

    async def run(self, request: web.Request) -> web.Response:
        study_name, run_name = _required(request, "study"), _required(request, "run")
        log_steps = request.query.get("log") == "1"

        def read() -> tuple[Any, pages.RunPlot, Any, float | None]:
            study, plots, incumbent = self._study_plots(study_name, run_name)
            history = self.engine.decision_history(study_name, run_name)
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
                can_stop=self.engine.allow_manual_stop,
                message=request.query.get("message", ""),
            )
        )

    async def stop(self, request: web.Request) -> web.Response:
        form = await request.post()
        study, run = str(form.get("study", "")), str(form.get("run", ""))
        note = str(form.get("note", "")) or "from the dashboard"
        if not study or not run:
            raise InvalidArgumentError("the stop form needs a study and a run.")
        await self._call(self.engine.stop_run, study, run, note)
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
        if not dashboard.authorize(request):
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
    engine: Engine,
    executor: Executor,
    *,
    host: str,
    port: int,
    token: str,
    refresh_s: float,
    authorize: Authorize | None = None,
) -> HttpSide:
    """Starts the dashboard on host:port; `authorize` replaces the token check (tenants)."""
    check = authorize or (lambda request: http_authorized(request, token))
    app = build_app(Dashboard(engine, executor, check, refresh_s, bool(token)))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
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
