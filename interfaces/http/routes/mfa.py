"""/api/auth/mfa: a second factor (TOTP, with recovery codes) and the
login step that asks for it."""

from __future__ import annotations

from fastapi import APIRouter

from interfaces.http.deps import ClientDep, CurrentUserDep, ServicesDep
from interfaces.http.errors import ERROR_RESPONSES
from interfaces.http.routes.auth import token_response
from interfaces.http.schemas import (
    CodeRequest,
    DisableMfaRequest,
    EnrolTotpRequest,
    MessageResponse,
    RecoveryCodesResponse,
    TokenResponse,
    TotpEnrolmentResponse,
    VerifyMfaRequest,
)

router = APIRouter(prefix="/api/auth/mfa", tags=["mfa"], responses=ERROR_RESPONSES)


@router.post("/totp")
def enrol_totp(
    body: EnrolTotpRequest,
    current: CurrentUserDep,
    services: ServicesDep,
    client: ClientDep,
) -> TotpEnrolmentResponse:
    """Start a TOTP enrolment (the password is required): nothing is
    enforced until a code confirms it; a second call replaces it."""
    enrolment = services.mfa.enrol(current.user.id, body.password, client)
    return TotpEnrolmentResponse(
        secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri
    )


@router.post("/totp/confirm")
def confirm_totp(
    body: CodeRequest, current: CurrentUserDep, services: ServicesDep, client: ClientDep
) -> RecoveryCodesResponse:
    """Turn MFA on with a code of the enrolment; the recovery codes are
    shown this once."""
    codes = services.mfa.confirm(current.user.id, body.code, client)
    return RecoveryCodesResponse(recovery_codes=codes)


@router.post("/verify")
def verify(
    body: VerifyMfaRequest, services: ServicesDep, client: ClientDep
) -> TokenResponse:
    """The login's second step: the mfa_token of its 403 and a TOTP or
    recovery code open the session."""
    grant = services.mfa.verify(body.mfa_token, body.code, client)
    return token_response(services, grant)


@router.post("/recovery-codes")
def regenerate_recovery_codes(
    body: CodeRequest, current: CurrentUserDep, services: ServicesDep, client: ClientDep
) -> RecoveryCodesResponse:
    """A new set of recovery codes for a TOTP code; the old set stops working."""
    codes = services.mfa.regenerate_recovery_codes(current.user.id, body.code, client)
    return RecoveryCodesResponse(recovery_codes=codes)


@router.delete("/totp")
def disable_totp(
    body: DisableMfaRequest,
    current: CurrentUserDep,
    services: ServicesDep,
    client: ClientDep,
) -> MessageResponse:
    """Turn MFA off (password and a code required); every other session ends."""
    services.mfa.disable(
        current.user.id, body.password, body.code, client, current.session_id
    )
    return MessageResponse(detail="MFA is off.")
