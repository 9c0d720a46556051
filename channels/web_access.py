"""Who may use the web chat, and what a browser may do with it (DESIGN 7.6).

- With a real model, ``/api/*`` answers loopback clients only, unless
  ``CHATLANE_WEB_TOKEN`` is set (then every request needs it as a bearer
  token; the page asks for it once) or ``channels.web.public: true``. With
  the offline demo model nothing is spent, so the chat is open.
- The client address is the socket's peer; behind a PaaS router
  (``PUBLIC_URL`` set) it is the last address of ``X-Forwarded-For``, the
  one the router itself appended, so a relayed remote client is remote and
  each client has its own rate limit.
- Every response carries a Content-Security-Policy (``img-src 'self' data:``:
  a model's Markdown cannot load a remote image to leak the conversation),
  except a platform's webhook answers (``for_platforms``), which no browser reads.
- POSTs must be JSON from the page's own origin: a cross-site form or
  ``text/plain`` fetch is refused. An upload (multipart) must also carry
  ``X-Chatlane-Upload: 1``, which a cross-site page cannot send.
- A conversation belongs to a browser: its id is the page's session id
  joined to a random id the server keeps in an HttpOnly cookie, so knowing a
  session id alone reaches nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web

from bot.config import ChannelConfig

TOKEN_ENV = "CHATLANE_WEB_TOKEN"
BROWSER_COOKIE = "chatlane_browser"
UPLOAD_HEADER = "X-Chatlane-Upload"
CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class WebConfig(ChannelConfig):
    """``channels.web``: the shared keys, and ``public`` (open the chat to every client
    that reaches the port, even with a real model)."""

    public: bool = False


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if getattr(request.match_info.handler, "for_platforms", False):
        return  # a platform's webhook (channels.common.for_platforms): no browser reads it
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


class WebGuard:
    def __init__(self, *, public: bool, token: str | None, behind_proxy: bool) -> None:
        self.public = public
        self.token = token or None
        self.behind_proxy = behind_proxy

    @classmethod
    def from_env(
        cls, config: ChannelConfig, env: Mapping[str, str], public_url: str | None
    ) -> WebGuard:
        return cls(
            public=bool(getattr(config, "public", False)),
            token=env.get(TOKEN_ENV),
            behind_proxy=bool(public_url),
        )

    def client_address(self, request: web.Request) -> str:
        if self.behind_proxy:
            forwarded = request.headers.get("X-Forwarded-For", "")
            last = forwarded.rsplit(",", 1)[-1].strip()
            if last:
                return last[:64]
        return request.remote or "unknown"

    def admit(self, request: web.Request, *, demo: bool) -> None:
        """Raise the HTTP refusal for a client that may not use the API."""
        if self.token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                raise web.HTTPUnauthorized(
                    text="this chat needs its access token", headers={"WWW-Authenticate": "Bearer"}
                )
            return
        if self.public or demo:
            return
        if not _loopback(self.client_address(request)):
            raise web.HTTPForbidden(
                text=f"this chat answers local clients only; set {TOKEN_ENV} or "
                "channels.web.public: true to open it"
            )

    def same_origin(self, request: web.Request, *, uploads: bool = False) -> None:
        """Refuse a POST another site's page made (a form, or a fetch without preflight).
        With ``uploads``, multipart/form-data is taken too, but only with the
        ``X-Chatlane-Upload: 1`` header, which no cross-site form can send and no
        cross-site fetch can send without a preflight this server never grants."""
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise web.HTTPForbidden(text="cross-origin requests are refused")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
            raise web.HTTPForbidden(text="cross-origin requests are refused")
        if uploads and request.content_type == "multipart/form-data":
            if request.headers.get(UPLOAD_HEADER) != "1":
                raise web.HTTPForbidden(text=f"an upload needs the header {UPLOAD_HEADER}: 1")
            return
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json")


def browser_id(request: web.Request) -> str | None:
    """The browser's id from its cookie, hashed (the cookie itself is never stored)."""
    cookie = request.cookies.get(BROWSER_COOKIE, "")
    if len(cookie) < 32 or len(cookie) > 64 or not cookie.isascii():
        return None
    return hashlib.sha256(cookie.encode()).hexdigest()[:24]


def new_browser_cookie(response: web.StreamResponse, *, secure: bool) -> str:
    """Give the browser a fresh random id; its hashed form, as ``browser_id`` reads it."""
    cookie = secrets.token_urlsafe(32)
    response.set_cookie(
        BROWSER_COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=secure,
        max_age=400 * 24 * 3600,
        path="/",
    )
    return hashlib.sha256(cookie.encode()).hexdigest()[:24]


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
