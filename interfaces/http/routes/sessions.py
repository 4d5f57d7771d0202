"""/api/auth/sessions and /api/auth/password: a user manages their own sessions."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter

from infrastructure.tokens import InvalidAccessTokenError
from interfaces.http.deps import (
    ClientDep,
    CurrentUserDep,
    ServicesDep,
    SessionHolderDep,
)
from interfaces.http.errors import ERROR_RESPONSES
from interfaces.http.schemas import (
    ChangePasswordRequest,
    MessageResponse,
    SessionResponse,
)

router = APIRouter(prefix="/api/auth", tags=["sessions"], responses=ERROR_RESPONSES)


@router.get("/sessions")
def list_sessions(
    current: CurrentUserDep, services: ServicesDep
) -> list[SessionResponse]:
    """List the caller's active sessions, newest first; `current` marks this one."""
    rows = services.sessions.list_sessions(current.user.id, services.app.clock())
    return [SessionResponse.of(row, current.session_id) for row in rows]


@router.delete("/sessions/{session_id}")
def revoke_session(
    session_id: UUID, holder: SessionHolderDep, services: ServicesDep, client: ClientDep
) -> MessageResponse:
    """End one of the caller's sessions; another user's answers 404, not 403.

    One already over is told it is done: also the caller's own, sent again
    with its token once the first try ended it.
    """
    if holder.current is not None:
        services.app.logout(holder.current.user.id, session_id, client)
    elif session_id != holder.claims.session_id or not services.app.has_logged_out(
        holder.claims.user_id, session_id
    ):
        raise InvalidAccessTokenError
    return MessageResponse(detail="Session revoked.")


@router.post("/password")
def change_password(
    body: ChangePasswordRequest,
    current: CurrentUserDep,
    services: ServicesDep,
    client: ClientDep,
) -> MessageResponse:
    """Change the password (the current one is required); other sessions end."""
    services.app.change_password(
        current.user.id,
        body.current_password,
        body.new_password,
        client,
        keep=current.session_id,
    )
    return MessageResponse(detail="Password changed.")
