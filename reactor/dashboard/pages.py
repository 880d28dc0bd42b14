"""The dashboard's routes: the overview, the failed jobs, a job's page, their event streams, the
actions and the login. Pages are rendered on the server; the event streams send the live part of
a page as rendered HTML, which a few lines of script put in place (static/dashboard.js)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from reactor.dashboard import audit
from reactor.dashboard.auth import COOKIE, Auth
from reactor.dashboard.live import JobWatch, Overview
from reactor.dashboard.project import SHOWN, FailedFilter, Project
from reactor.dashboard.settings import Settings
from reactor.store import StoreError

HERE = Path(__file__).parent
PAGE_SIZE = 50
SECURITY_HEADERS = {
    # No inline script or style, no framing (a confirmation button cannot be clicked through a frame).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it the browser sends `Origin: null` on form posts, which auth refuses.
    "Referrer-Policy": "same-origin",
}
DONE_MESSAGES = {  # what an action's redirect shows; only counts travel in the URL
    "retried": "Retried {n} job(s).",
    "cancelled": "Cancelled {n} job(s).",
    "not_cancelled": "Not cancelled: the job has finished.",
    "not_retried": "Not retried: the job has not failed.",
    "deleted": "Deleted {n} job(s).",
    "not_deleted": "Not deleted: only finished jobs can be deleted.",
}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(seconds=seconds, when=when, pretty=pretty, percent=percent)
    return env


def seconds(value: float | str | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def when(value: str | datetime | None) -> str:
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def parse_time(name: str, raw: str) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: {raw!r} is not a date and time\n") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Pages:
    def __init__(
        self, settings: Settings, project: Project, overview: Overview, watch: JobWatch, auth: Auth
    ) -> None:
        self._settings = settings
        self._project = project
        self._overview = overview
        self._watch = watch
        self._auth = auth
        self._env = environment()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_security_headers, self._auth.middleware])
        app.router.add_get("/", self.overview)
        app.router.add_get("/events/overview", self.overview_events)
        app.router.add_get("/failed", self.failed)
        app.router.add_get("/failed/confirm", self.confirm)
        app.router.add_post("/failed/{action:retry|delete}", self.bulk)
        app.router.add_get("/jobs/{table}/{id:[0-9]+}", self.job)
        app.router.add_get("/events/jobs/{table}/{id:[0-9]+}", self.job_events)
        app.router.add_post("/jobs/{table}/{id:[0-9]+}/{action:retry|cancel|delete}", self.job_action)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_static("/static/", HERE / "static")
        return app

    def _render(self, request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
        html = self._env.get_template(template).render(
            who=self._auth.who(request),
            tables=self._settings.tables,
            login=self._auth.required,
            message=_message(request),
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def _who(self, request: web.Request) -> str:
        return self._auth.who(request) or "?"

    def _fragment(self, template: str, **context: Any) -> str:
        return self._env.get_template(template).render(**context)

    def _table(self, raw: str | None) -> str:
        if not raw:
            return self._settings.tables[0]
        if raw not in self._settings.tables:
            raise web.HTTPNotFound(text=f"{raw!r} is not a table this dashboard shows\n")
        return raw

    # -- overview --

    async def overview(self, request: web.Request) -> web.Response:
        snapshot = self._overview.latest or await self._overview.read()
        return self._render(request, "overview.html", snapshot=snapshot)

    async def overview_events(self, request: web.Request) -> web.StreamResponse:
        response = await _event_stream(request)
        try:
            async with self._overview.subscribe() as snapshots:
                async for snapshot in snapshots:
                    await _send(response, "fragment", self._fragment("_overview.html", snapshot=snapshot))
        except ConnectionResetError:
            pass
        return response

    # -- failed jobs --

    def _filter(self, values: Any) -> tuple[str, FailedFilter]:
        table = self._table(values.get("table"))
        which = FailedFilter(
            job_type=values.get("type") or None,
            error=values.get("error") or None,
            since=parse_time("since", values.get("since", "")),
            until=parse_time("until", values.get("until", "")),
        )
        return table, which

    async def failed(self, request: web.Request) -> web.Response:
        table, which = self._filter(request.query)
        offset = int(request.query.get("offset", "0")) if request.query.get("offset", "0").isdigit() else 0
        rows = await self._project.failed(table, which, PAGE_SIZE + 1, offset)
        return self._render(
            request,
            "failed.html",
            table=table,
            which=which,
            form=_form_values(request.query),
            query=_filter_query(table, request.query),
            rows=rows[:PAGE_SIZE],
            offset=offset,
            more=len(rows) > PAGE_SIZE,
            page_size=PAGE_SIZE,
        )

    async def confirm(self, request: web.Request) -> web.Response:
        action = request.query.get("action")
        if action not in ("retry", "delete"):
            raise web.HTTPBadRequest(text="action must be retry or delete\n")
        table, which = self._filter(request.query)
        count = await self._project.count_failed(table, which)
        return self._render(
            request,
            "confirm.html",
            action=action,
            table=table,
            which=which,
            count=count,
            form=_form_values(request.query),
            query=_filter_query(table, request.query),
        )

    async def bulk(self, request: web.Request) -> web.Response:
        form = await request.post()
        table, which = self._filter(form)
        action = request.match_info["action"]
        if action == "retry":
            count = len(await self._project.retry_matching(table, which))
            code = "retried"
        else:
            count = await self._project.delete_matching(table, which)
            code = "deleted"
        audit.action(
            self._who(request), f"{action} all matching", table, filter=which.describe(), count=count
        )
        done = urlencode({"done": code, "n": count})
        raise web.HTTPSeeOther(f"/failed?{_filter_query(table, form)}&{done}")

    # -- a job --

    async def job(self, request: web.Request) -> web.Response:
        table, job_id = self._table(request.match_info["table"]), int(request.match_info["id"])
        row = await self._project.job(table, job_id)
        if row is None:
            return self._render(request, "gone.html", status=404, table=table, job_id=job_id)
        return self._render(
            request, "job.html", table=table, job=row, mode="polling", **await self._around(table, row)
        )

    async def job_events(self, request: web.Request) -> web.StreamResponse:
        table, job_id = self._table(request.match_info["table"]), int(request.match_info["id"])
        response = await _event_stream(request)

        async def send(row: dict[str, Any] | None, mode: str) -> None:
            around = await self._around(table, row) if row is not None and mode != "unreachable" else {}
            html = self._fragment("_job.html", table=table, job=row, job_id=job_id, mode=mode, **around)
            await _send(response, "fragment", html)

        try:
            await self._watch.watch(table, job_id, send)
        except* ConnectionResetError:
            pass
        return response

    async def _around(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        """A job page's children and log lines, read with it."""
        return {
            "children": await self._project.children(table, row["id"]),
            "log": await self._project.log(table, row["id"]),
            "shown": SHOWN,
        }

    async def job_action(self, request: web.Request) -> web.Response:
        table, job_id = self._table(request.match_info["table"]), int(request.match_info["id"])
        action = request.match_info["action"]
        if action == "retry":
            done = await self._project.retry(table, [job_id])
            code = "retried" if done else "not_retried"
        elif action == "cancel":
            done = (await self._project.cancel(table, [job_id]))["cancelled"]
            code = "cancelled" if done else "not_cancelled"
        else:
            done = await self._project.delete(table, [job_id])
            code = "deleted" if done else "not_deleted"
        audit.action(self._who(request), action, table, ids=[job_id], done=done)
        query = urlencode({"done": code, "n": len(done)})
        target = "/failed" if action == "delete" and done else f"/jobs/{table}/{job_id}"
        raise web.HTTPSeeOther(f"{target}?{query}")

    # -- login --

    async def login_page(self, request: web.Request) -> web.Response:
        return self._render(request, "login.html", next=_local(request.query.get("next", "/")), failed=False)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        target = _local(str(form.get("next", "/")))
        name = self._auth.token_name(str(form.get("token", "")))
        if name is None:
            audit.action(f"{request.remote} (no valid token)", "login refused", "-")
            return self._render(request, "login.html", status=401, next=target, failed=True)
        audit.action(name, "login", "-")
        response = web.HTTPSeeOther(target)
        self._auth.login(response, request, name)
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response


@web.middleware
async def _security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response = await handler(request)
    except StoreError as exc:
        response = web.Response(text=f"the project's API did not answer as expected: {exc}\n", status=502)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, html: str) -> None:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    await response.write(f"event: {event}\n{data}\n".encode())


def _message(request: web.Request) -> str | None:
    template = DONE_MESSAGES.get(request.query.get("done", ""))
    n = request.query.get("n", "0")
    return template.format(n=int(n) if n.isdigit() else 0) if template else None


def _form_values(values: Any) -> dict[str, str]:
    return {k: str(values.get(k, "")) for k in ("type", "error", "since", "until")}


def _filter_query(table: str, values: Any) -> str:
    return urlencode({"table": table, **{k: v for k, v in _form_values(values).items() if v}})


def _local(target: str) -> str:
    """A redirect target on this site only."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
