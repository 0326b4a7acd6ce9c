"""Bearer-token authentication as a plain ASGI middleware (it never buffers a stream). Every
route needs the key except /health, /version, /metrics and CORS preflight requests."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers

from purellm.server.errors import error_response

OPEN_PATHS = ("/health", "/version", "/metrics")


def key_matches(given: str, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every accepted key."""
    given_bytes = given.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given_bytes, key.encode())
    return matched


class AuthMiddleware:
    def __init__(self, app, keys: tuple[str, ...]):
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self._is_open(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "invalid or missing API key (Authorization: Bearer KEY)")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)

    def _is_open(self, scope) -> bool:
        path = scope.get("path", "")
        return scope.get("method") == "OPTIONS" or path in OPEN_PATHS

    def _authorized(self, scope) -> bool:
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return key_matches(token.strip(), self.keys)
