"""The HTTP front door: access rules, rate and size limits, authentication, the audit line.

An ASGI middleware around the application, in the order a request meets them: the hosts.allow
rules of the DICOM port (403), a per-address rate limit (429), the request size limit (413),
then credentials (401 without, 403 for a read token on a write): a bearer token, or the same
token as the password of HTTP Basic (user name = token name) so that a browser can open the
status page. ``/healthz`` and ``/readyz``
answer without credentials, for load balancers. Every write and every refused request is
logged with who, what and the outcome; never a patient's data.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool

from wlmd.security.access import AccessPolicy
from wlmd.web.auth import Principal, TokenStore

LOGGER = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class GuardSettings:
    """The limits and credentials the front door applies."""

    tokens: TokenStore | None = None
    client_certificate: Principal | None = None  # who a verified TLS client counts as
    access: AccessPolicy | None = None
    max_body: int = 1 << 20
    rate: float = 50.0  # requests per second per address, sustained
    burst: int = 100


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    """A token bucket per client address; idle buckets are dropped so memory stays bounded."""

    rate: float
    burst: int
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, address: str, now: float) -> bool:
        bucket = self.buckets.get(address)
        if bucket is None:
            if len(self.buckets) > 10_000:
                self._forget_idle(now)
            bucket = self.buckets[address] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for address in [a for a, b in self.buckets.items() if now - b.stamp > full_after]:
            del self.buckets[address]


class Guard:
    """ASGI middleware applying ``GuardSettings`` before the application sees a request."""

    def __init__(self, app: ASGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings
        self.limiter = RateLimiter(settings.rate, settings.burst)
        # in the HTTP child (multi-process mode) this lands in /metrics with the supervisor's
        self.requests = Counter("wlmd_http_requests", "HTTP requests by method and status",
                                ["method", "status"], registry=None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("", 0)
        address, method, path = client[0], scope["method"], scope["path"]
        refusal = await self._refusal(scope, address, method, path)
        if refusal is not None:
            status, message, who = refusal
            LOGGER.warning("HTTP %s %s from %s (%s): refused %d, %s", method, path, address,
                           who, status, message)
            await _reply(send, status, message)
            self.requests.labels(method, str(status)).inc()
            return
        principal: Principal | None = scope.get("wlmd.principal")
        who = principal.name if principal else "-"
        outcome: dict[str, int] = {}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
            await send(message)

        body = await _read_body(receive, self.settings.max_body)
        if body is None:
            LOGGER.warning("HTTP %s %s from %s (%s): refused 413, body too large", method, path,
                           address, who)
            await _reply(send, 413, f"request body over {self.settings.max_body} bytes")
            self.requests.labels(method, "413").inc()
            return
        await self.app(scope, _replay(body, receive), recording_send)
        self.requests.labels(method, str(outcome.get("status", 0))).inc()
        if method not in READ_METHODS:
            LOGGER.info("HTTP %s %s from %s (%s): %d", method, path, address, who,
                        outcome.get("status", 0))

    async def _refusal(self, scope: Scope, address: str, method: str,
                       path: str) -> tuple[int, str, str] | None:
        settings = self.settings
        if settings.access is not None:
            decision = await run_in_threadpool(settings.access.check, address)
            if not decision.allowed:
                return 403, "address not allowed", "-"
        if not self.limiter.allow(address, time.monotonic()):
            return 429, "too many requests", "-"
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body):
            return 413, f"request body over {settings.max_body} bytes", "-"
        if path in OPEN_PATHS:
            return None
        principal = self._principal(scope)
        if principal is None:
            return 401, "credentials required", "-"
        if not principal.may("read" if method in READ_METHODS else "write"):
            return 403, "this token may only read", principal.name
        scope["wlmd.principal"] = principal
        return None

    def _principal(self, scope: Scope) -> Principal | None:
        authorization = _header(scope, b"authorization") or ""
        scheme, _, credentials = authorization.partition(" ")
        tokens = self.settings.tokens
        if scheme.lower() == "bearer":
            return tokens.authenticate(credentials.strip()) if tokens else None
        if scheme.lower() == "basic":  # a browser: user name = token name, password = token
            try:
                name, _, token = base64.b64decode(credentials, validate=True).decode().partition(
                    ":")
            except (ValueError, UnicodeDecodeError):
                return None
            principal = tokens.authenticate(token) if tokens else None
            return principal if principal is not None and principal.name == name else None
        if scope.get("scheme") == "https":
            return self.settings.client_certificate  # only verified clients get this far
        return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past ``limit`` (whatever it declared)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away; the app sees an empty body
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body to the application, then pass later messages through."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="wlmd"'))
        headers.append((b"www-authenticate", b'Basic realm="wlmd", charset="UTF-8"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
