"""Bearer-token check for write and admin endpoints; reads stay open.

``require_token`` guards the query node's routes; ``token_dependency`` builds the same check for
another app (the gateway) that keeps its token elsewhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="settings.token; required when configured")


def check_token(
    expected: str | None, credentials: HTTPAuthorizationCredentials | None, who: str = "node"
) -> None:
    """Raise 401 unless ``credentials`` carry ``expected``; no check when ``expected`` is None."""
    if expected is None:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail=f"this endpoint needs 'Authorization: Bearer <token>' with the {who}'s token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def token_dependency(
    expected: Callable[[Request], str | None], who: str
) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that checks the bearer token ``expected(request)`` names."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        check_token(expected(request), credentials, who)

    return dependency


require_token = token_dependency(lambda request: request.state.node.settings.token, "node")
