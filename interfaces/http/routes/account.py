"""Mailed links over HTTP: verify the email, reset a forgotten password."""

from __future__ import annotations

from fastapi import APIRouter, status

from interfaces.http.deps import ClientDep, CurrentUserDep, ServicesDep
from interfaces.http.errors import ERROR_RESPONSES
from interfaces.http.schemas import (
    ForgotPasswordRequest,
    MessageResponse,
    ResetPasswordRequest,
    VerifyEmailRequest,
)

router = APIRouter(prefix="/api/auth", tags=["account"], responses=ERROR_RESPONSES)


@router.post("/verify/request", status_code=status.HTTP_202_ACCEPTED)
def request_verification(
    current: CurrentUserDep, services: ServicesDep, client: ClientDep
) -> MessageResponse:
    """Mail the caller a link that verifies their email address."""
    services.mail.request_verification(current.user.id, client)
    return MessageResponse(detail="A verification link is on its way.")


@router.post("/verify")
def verify_email(
    body: VerifyEmailRequest, services: ServicesDep, client: ClientDep
) -> MessageResponse:
    """Verify an email with the token from its link; each token works once."""
    services.mail.verify_email(body.token, client)
    return MessageResponse(detail="Email verified.")


@router.post("/password/forgot", status_code=status.HTTP_202_ACCEPTED)
def forgot_password(
    body: ForgotPasswordRequest, services: ServicesDep, client: ClientDep
) -> MessageResponse:
    """Mail a reset link if an account has this email; the answer is the same."""
    services.mail.forgot_password(body.email, client)
    return MessageResponse(
        detail="If an account has this address, a reset link is on its way."
    )


@router.post("/password/reset")
def reset_password(
    body: ResetPasswordRequest, services: ServicesDep, client: ClientDep
) -> MessageResponse:
    """Set a new password with the token from a reset link; every session ends."""
    services.mail.reset_password(body.token, body.new_password, client)
    return MessageResponse(detail="Password reset. Please log in again.")
