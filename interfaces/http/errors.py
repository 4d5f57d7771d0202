"""One table from error to status and code; every error has the same body shape."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError, PersistenceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from application.errors import (
    AccountLockedError,
    ConflictError,
    CursorBeyondLogError,
    EmailAlreadyRegisteredError,
    HashingBusyError,
    InvalidCredentialsError,
    InvalidMailTokenError,
    InvalidRefreshTokenError,
    MfaRequiredError,
    ReadModelFailedError,
    RetryKeySpentError,
    SessionNotFoundError,
    TooManyAttemptsError,
    UnsafeWebhookUrlError,
    UserNotFoundError,
    WeakPasswordError,
    WrongChallengeCodeError,
    WrongPasswordError,
)
from application.feed import UnknownEventTypeError
from domain.errors import (
    EmailAlreadyVerifiedError,
    InvalidCodeError,
    InvalidEmailError,
    InvalidMfaChallengeError,
    LastAdminError,
    MfaStateError,
    MixedScriptEmailError,
    RequestedTooSoonError,
    UnknownWebhookError,
)
from infrastructure.tokens import InvalidAccessTokenError
from interfaces.http.limits import SECURITY_HEADERS
from interfaces.http.schemas import ErrorResponse

log = logging.getLogger(__name__)

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
RETRY_SOON = {"Retry-After": "1"}


class ForbiddenError(Exception):
    """The caller is authenticated but lacks the role for this route."""


# error class -> (status, code, detail, headers)
ERRORS: dict[type[Exception], tuple[int, str, str, dict[str, str]]] = {
    InvalidEmailError: (422, "validation_error", "The email address is not valid.", {}),
    MixedScriptEmailError: (
        422,
        "validation_error",
        "The email address mixes scripts, as look-alike addresses do.",
        {},
    ),
    EmailAlreadyRegisteredError: (
        409,
        "email_taken",
        "An account with this email already exists.",
        {},
    ),
    RetryKeySpentError: (
        409,
        "idempotency_key_spent",
        "This Idempotency-Key's session has moved on; send a new key.",
        {},
    ),
    WeakPasswordError: (
        422,
        "weak_password",
        "The password is too easy to guess.",
        {},
    ),
    InvalidCredentialsError: (
        401,
        "invalid_credentials",
        "Invalid email or password.",
        {},
    ),
    InvalidRefreshTokenError: (
        401,
        "invalid_refresh_token",
        "The refresh token is invalid or expired.",
        {},
    ),
    InvalidAccessTokenError: (
        401,
        "not_authenticated",
        "Missing or invalid access token.",
        BEARER_CHALLENGE,
    ),
    InvalidMailTokenError: (
        400,
        "invalid_token",
        "The link is invalid, used or expired.",
        {},
    ),
    EmailAlreadyVerifiedError: (
        409,
        "already_verified",
        "The email is already verified.",
        {},
    ),
    RequestedTooSoonError: (
        429,
        "too_soon",
        "A link was sent moments ago; check your mail.",
        {},
    ),
    WrongPasswordError: (
        400,
        "wrong_password",
        "The current password is not correct.",
        {},
    ),
    TooManyAttemptsError: (
        429,
        "too_many_attempts",
        "Too many failed attempts; try again later.",
        {},
    ),
    HashingBusyError: (
        503,
        "busy",
        "Too many password checks at once; retry in a moment.",
        {},
    ),
    AccountLockedError: (
        423,
        "account_locked",
        "The account is locked after failed attempts; try again later.",
        {},
    ),
    LastAdminError: (
        409,
        "last_admin",
        "This would leave no admin; appoint another first.",
        {},
    ),
    ForbiddenError: (403, "forbidden", "This requires another role.", {}),
    SessionNotFoundError: (404, "session_not_found", "No such session.", {}),
    InvalidCodeError: (400, "invalid_code", "The code is not right.", {}),
    WrongChallengeCodeError: (401, "invalid_code", "The code is not right.", {}),
    InvalidMfaChallengeError: (
        401,
        "invalid_mfa_token",
        "The MFA token is used, expired or spent: log in again.",
        {},
    ),
    MfaStateError: (409, "mfa_state", "Not possible now.", {}),
    UserNotFoundError: (404, "user_not_found", "No such user.", {}),
    UnknownWebhookError: (404, "webhook_not_found", "No such webhook.", {}),
    UnknownEventTypeError: (422, "unknown_event_type", "No such event type.", {}),
    CursorBeyondLogError: (
        422,
        "cursor_beyond_log",
        "The log has not reached this cursor.",
        {},
    ),
    UnsafeWebhookUrlError: (
        422,
        "unsafe_webhook_url",
        "The service does not send to this URL:",
        {},
    ),
    ConflictError: (409, "conflict", "A concurrent change won; try again.", {}),
    # A lost race the use cases did not retry: the same answer, never a 500.
    IntegrityError: (409, "conflict", "A concurrent change won; try again.", {}),
    ReadModelFailedError: (
        503,
        "read_model_failed",
        "Not saved: a read model could not apply it; retry shortly.",
        RETRY_SOON,
    ),
    psycopg.IntegrityError: (
        409,
        "conflict",
        "A concurrent change won; try again.",
        {},
    ),
    # Any other database failure, wrapped by the library or not: a lost or
    # refused connection, a timeout, a cancelled statement, a session ended
    # after idling in a transaction. Nothing of it was acknowledged: retryable.
    PersistenceError: (503, "database_unavailable", "Service unavailable.", RETRY_SOON),
    psycopg.Error: (503, "database_unavailable", "Service unavailable.", RETRY_SOON),
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse}
    for status in {422, *(e[0] for e in ERRORS.values())}
}


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def _mfa_required(_: Request, error: Exception) -> JSONResponse:
    """403 with what the client needs for the second step (as Auth0 answers)."""
    assert isinstance(error, MfaRequiredError)  # noqa: S101  (registered for it)
    body = error_body(
        "mfa_required",
        "A second factor is required: send a code with the mfa_token.",
        mfa_token=error.mfa_token,
        expires_in=error.expires_in,
    )
    return JSONResponse(body, 403)


def _known_error(request: Request, error: Exception) -> JSONResponse:
    for kind in type(error).__mro__:
        if kind in ERRORS:
            status, code, detail, headers = ERRORS[kind]
            wait = getattr(error, "retry_after_s", None)
            if isinstance(wait, int):  # how long this refusal lasts, not a guess
                headers = {"Retry-After": str(wait)}
            if status >= 500:
                log.warning("answered %s: %s", status, type(error).__name__)
            reason = getattr(error, "reason", None)
            if isinstance(reason, str):  # what exactly is wrong, in words
                detail = f"{detail} {reason}"
            return JSONResponse(error_body(code, detail), status, headers=headers)
    return _unexpected(request, error)


def _unexpected(_: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=error)
    # Answered outside every middleware: it carries their headers itself.
    headers = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}
    return JSONResponse(
        error_body("internal_error", "Internal error."), 500, headers=headers
    )


def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    """Say which fields are wrong, never echoing their values (may be passwords)."""
    if not isinstance(error, RequestValidationError):
        return _unexpected(request, error)
    fields = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "invalid"))}
        for e in error.errors()
    ]
    body = error_body("validation_error", "The request is not valid.", errors=fields)
    return JSONResponse(body, 422)


def _http_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, StarletteHTTPException):
        return _unexpected(request, error)
    code = {
        400: "malformed_body",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
    }.get(error.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(error.detail)), error.status_code, headers=error.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to the one body shape; no stack trace ever leaves."""
    for kind in ERRORS:
        app.add_exception_handler(kind, _known_error)
    app.add_exception_handler(MfaRequiredError, _mfa_required)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
