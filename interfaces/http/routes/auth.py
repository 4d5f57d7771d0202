"""/api/auth: sign up, log in, refresh, log out, and who am I."""

from __future__ import annotations

from enum import StrEnum

from fastapi import APIRouter, status

from application.values import SessionGrant
from infrastructure.logs import note_user
from infrastructure.tokens import InvalidAccessTokenError
from interfaces.bootstrap import Services
from interfaces.http.deps import (
    ClientDep,
    CurrentUserDep,
    RetryingClientDep,
    ServicesDep,
    SessionHolderDep,
)
from interfaces.http.errors import ERROR_RESPONSES
from interfaces.http.schemas import (
    EraseAccountRequest,
    LoginRequest,
    MessageResponse,
    MfaRequiredResponse,
    RefreshRequest,
    SignupRequest,
    TokenResponse,
    UserResponse,
)

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERROR_RESPONSES)


class LogoutScope(StrEnum):
    ALL = "all"
    CURRENT = "current"


def token_response(services: Services, grant: SessionGrant) -> TokenResponse:
    note_user(grant.user_id)
    return TokenResponse(
        access_token=services.tokens.issue(
            grant.user_id, grant.session_id, grant.role, grant.factors
        ),
        refresh_token=grant.refresh_token,
        expires_in=services.tokens.ttl_s,
        user=UserResponse.of(grant.user),
    )


@router.post("/signup", status_code=status.HTTP_201_CREATED)
def signup(
    body: SignupRequest, services: ServicesDep, client: RetryingClientDep
) -> TokenResponse:
    """Create an account and log it in."""
    grant = services.app.register(body.email, body.password, client)
    return token_response(services, grant)


@router.post(
    "/login",
    responses={
        403: {
            "model": MfaRequiredResponse,
            "description": "The password is right; MFA asks for a code.",
        }
    },
)
def login(
    body: LoginRequest, services: ServicesDep, client: RetryingClientDep
) -> TokenResponse:
    """Exchange email and password for tokens; every refusal is the same 401.
    An account with MFA on answers 403 `mfa_required` with an `mfa_token`."""
    grant = services.app.login(body.email, body.password, client)
    return token_response(services, grant)


@router.post("/refresh")
def refresh(
    body: RefreshRequest, services: ServicesDep, client: ClientDep
) -> TokenResponse:
    """Rotate the refresh token: the one sent is dead from now on."""
    grant = services.app.refresh(body.refresh_token, client)
    return token_response(services, grant)


@router.post("/logout")
def logout(
    holder: SessionHolderDep,
    services: ServicesDep,
    client: ClientDep,
    scope: LogoutScope = LogoutScope.ALL,
) -> MessageResponse:
    """End every session of the caller, or with `scope=current` only this one.

    Sent again with the token of a session the first try ended (a retry), it
    is told it is done (a logout everywhere, only moments after it); any
    other ended session's token is refused.
    """
    current = holder.current
    if current is not None:
        if scope is LogoutScope.ALL:
            services.app.logout_all(current.user.id, client)
        else:
            services.app.logout(current.user.id, current.session_id, client)
    else:
        user_id, session_id = holder.claims.user_id, holder.claims.session_id
        retried = (
            services.app.has_logged_out_everywhere(user_id, session_id)
            if scope is LogoutScope.ALL
            else services.app.has_logged_out(user_id, session_id)
        )
        if not retried:
            raise InvalidAccessTokenError
    return MessageResponse(detail="Logged out.")


@router.get("/me")
async def me(current: CurrentUserDep) -> UserResponse:
    """Return the caller's account."""
    return UserResponse.of(current.user)


@router.delete("/me")
def erase_me(
    body: EraseAccountRequest,
    current: CurrentUserDep,
    services: ServicesDep,
    client: ClientDep,
) -> MessageResponse:
    """Erase the caller's account (its password is required): every session
    ends, the address may sign up again as a new account."""
    services.app.erase_own(current.user.id, body.password, client)
    return MessageResponse(detail="Account erased.")
