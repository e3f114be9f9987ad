"""The app pages on the HTTP port: apps, one app's functions, containers, recent inputs and live logs.

Plain server-rendered HTML. Every page needs a session: a login with an API token (its id and secret) sets a
signed cookie, checked on each request (a revoked token ends its sessions). Secret values are never shown.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from onshore.errors import NotFound, Unauthenticated
from onshore.services.overview import AppOverview, OverviewService
from onshore.services.tokens import TokenService

COOKIE = "onshore_session"
SESSION_SECONDS = 12 * 3600

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2430;background:#fafbfc}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #dde1e6;padding:.35rem .6rem;text-align:left;font-size:.9rem;vertical-align:top}
th{background:#eef1f4}code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#111820;color:#d7dde4;padding:1rem;max-height:28rem;overflow:auto;white-space:pre-wrap}
.state{font-weight:600}.muted{color:#6b7480}nav{margin-bottom:1rem}a{color:#0b5cad}
form{background:#fff;border:1px solid #dde1e6;padding:1.5rem;max-width:28rem}
input{width:100%;padding:.4rem;margin:.3rem 0 1rem;font-family:ui-monospace,monospace}
button{padding:.5rem 1.2rem}.error{color:#b00020}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _page(title: str, body: str, signed_in: bool = True) -> HTMLResponse:
    nav = '<nav><a href="/apps">Apps</a> · <a href="/logout">Sign out</a></nav>' if signed_in else ""
    return HTMLResponse(
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)} · Onshore</title>'
        f"<style>{_STYLE}</style></head><body>{nav}{body}</body></html>"
    )


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Sessions:
    """Signed session cookies: `token_id.expiry.signature`."""

    def __init__(self, key: bytes, tokens: TokenService) -> None:
        self._key = hmac.new(key, b"onshore-pages-session", hashlib.sha256).digest()
        self._tokens = tokens

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, token_id: str, now: float) -> str:
        payload = f"{token_id}.{int(now + SESSION_SECONDS)}"
        return f"{payload}.{self._sign(payload)}"

    def token_of(self, cookie: str, now: float) -> str:
        """The token id of a valid session cookie, or ""."""
        try:
            token_id, expiry, signature = cookie.rsplit(".", 2)
        except ValueError:
            return ""
        if not hmac.compare_digest(signature, self._sign(f"{token_id}.{expiry}")):
            return ""
        if not expiry.isdigit() or int(expiry) < now or not self._tokens.active(token_id):
            return ""
        return token_id


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/apps"


def _overview_html(view: AppOverview) -> str:
    app = view.app
    title = app.name or app.description or app.app_id
    functions = _table(
        ["Function", "Web URL", "Settings", "Live containers"],
        [
            [
                f"<code>{_e(f.name)}</code>",
                "<br>".join(
                    f'{_e(m + ": ") if m else ""}<a href="{_e(u)}">{_e(u)}</a>' for m, u in f.web_urls
                )
                or '<span class="muted">-</span>',
                "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in f.settings.items()),
                _e(f.live_containers),
            ]
            for f in view.functions
        ],
        "No functions.",
    )
    containers = _table(
        ["Container", "Function", "State", "Started", "Ended", "Exit code"],
        [
            [
                f"<code>{_e(c.task_id)}</code>",
                _e(c.function),
                f'<span class="state">{_e(c.state)}</span>',
                _e(_when(c.started_at)),
                _e(_when(c.finished_at)),
                _e("-" if c.exit_code is None else c.exit_code),
            ]
            for c in view.containers
        ],
        "No containers yet.",
    )
    inputs = _table(
        ["Function", "Input", "Call", "Status", "Queued", "Duration"],
        [
            [
                _e(i.function),
                f"<code>{_e(i.input_id)}</code>",
                f"<code>{_e(i.function_call_id)}</code>",
                f'<span class="state">{_e(i.status)}</span>',
                _e(_when(i.queued_at)),
                _e("-" if i.duration_s is None else f"{i.duration_s * 1000:.1f} ms"),
            ]
            for i in view.inputs
        ],
        "No calls yet.",
    )
    return (
        f"<h1>{_e(title)}</h1>"
        f'<p><code>{_e(app.app_id)}</code> · <span class="state">{_e(app.state.value)}</span>'
        f" · created {_e(_when(app.created_at))}"
        + (f" · deployed {_e(_when(app.deployed_at))} (version {_e(app.version)})" if app.deployed_at else "")
        + "</p>"
        f"<h2>Functions</h2>{functions}<h2>Containers</h2>{containers}<h2>Recent calls</h2>{inputs}"
    )


_FOLLOW_JS = """
<script>
const out = document.getElementById("logs");
const base = location.pathname.replace(/\\/$/, "");
const source = new EventSource(base + "/logs/stream?after=" + out.dataset.last);
source.onmessage = (event) => {
  const entry = JSON.parse(event.data);
  out.textContent += entry.data;
  out.scrollTop = out.scrollHeight;
};
source.addEventListener("done", () => source.close());
</script>
"""


def page_routes(overview: OverviewService, tokens: TokenService, sessions: Sessions) -> list[Route]:
    def signed_in(request: Request) -> bool:
        return bool(sessions.token_of(request.cookies.get(COOKIE, ""), time.time()))

    def to_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    async def login_form(request: Request, error: str = "") -> Response:
        target = _safe_next(request.query_params.get("next", "/apps"))
        message = f'<p class="error">{_e(error)}</p>' if error else ""
        body = (
            "<h1>Sign in to Onshore</h1>"
            "<p>Use an API token: the MODAL_TOKEN_ID and MODAL_TOKEN_SECRET your client uses "
            "(<code>onshore env</code> prints them; <code>onshore token create</code> makes another).</p>"
            f'{message}<form method="post" action="/login?next={_e(quote(target))}">'
            '<label>Token id<input name="token_id" autocomplete="username"></label>'
            '<label>Token secret<input name="token_secret" type="password" autocomplete="current-password">'
            '</label><button type="submit">Sign in</button></form>'
        )
        response = _page("Sign in", body, signed_in=False)
        if error:
            response.status_code = 401
        return response

    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode(errors="replace"))
        token_id = form.get("token_id", [""])[0].strip()
        secret = form.get("token_secret", [""])[0].strip()
        try:
            tokens.verify(token_id, secret)
        except Unauthenticated:
            return await login_form(request, "That token id and secret are not a valid API token.")
        target = _safe_next(request.query_params.get("next", "/apps"))
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            sessions.issue(token_id, time.time()),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="lax",
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    async def home(request: Request) -> Response:
        return RedirectResponse("/apps", status_code=303)

    async def apps(request: Request) -> Response:
        if not signed_in(request):
            return to_login(request)
        rows = [
            [
                f'<a href="/apps/{_e(r.app.app_id)}">'
                f"{_e(r.app.name or r.app.description or r.app.app_id)}</a>",
                f"<code>{_e(r.app.app_id)}</code>",
                f'<span class="state">{_e(r.app.state.value)}</span>',
                _e(r.functions),
                _e(r.live_containers),
                _e(_when(r.app.created_at)),
            ]
            for r in overview.app_rows()
        ]
        table = _table(
            ["App", "Id", "State", "Functions", "Live containers", "Created"], rows, "No apps yet."
        )
        return _page("Apps", f"<h1>Apps</h1>{table}")

    async def app_page(request: Request) -> Response:
        if not signed_in(request):
            return to_login(request)
        app_id = str(request.path_params["app_id"])
        try:
            view = overview.app(app_id)
            entries = overview.logs(app_id)
        except NotFound:
            return _page("Not found", f"<h1>No app {_e(app_id)}</h1>")
        last = entries[-1].entry_id if entries else 0
        text = "".join(e.data for e in entries)
        logs = f'<h2 id="logs-title">Logs</h2><pre id="logs" data-last="{last}">{_e(text)}</pre>'
        return _page(view.app.name or app_id, _overview_html(view) + logs + _FOLLOW_JS)

    async def log_stream(request: Request) -> Response:
        if not signed_in(request):
            return Response(status_code=401)
        app_id = str(request.path_params["app_id"])
        after = request.query_params.get("after", "0")
        last = int(after) if after.isdigit() else 0
        try:
            overview.logs(app_id, limit=1)
        except NotFound:
            return Response(status_code=404)

        async def events() -> AsyncIterator[bytes]:
            async for batch in overview.follow_logs(app_id, last, timeout=3600.0):
                if batch is None:
                    yield b"event: done\ndata: {}\n\n"
                    return
                for entry in batch:
                    data = json.dumps({"data": entry.data, "task_id": entry.task_id, "fd": entry.fd})
                    yield f"data: {data}\n\n".encode()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout),
        Route("/apps", apps),
        Route("/apps/{app_id}", app_page),
        Route("/apps/{app_id}/logs/stream", log_stream),
    ]
