"""Request and response bodies of the HTTP API: what the OpenAPI document describes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
)

from application.read_models import SessionRow, UserRow
from application.timeline import TimelineEntry


def _printable_text(value: str) -> str:
    """Refuse NUL and lone surrogates: they cannot be hashed or stored faithfully."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


PrintableText = Annotated[str, AfterValidator(_printable_text)]

# Every character counts (the hasher pre-hashes, see ADR 0005), so no byte limit.
NewPassword = Annotated[
    str, Field(min_length=8, max_length=256), AfterValidator(_printable_text)
]
GivenPassword = Annotated[
    str, Field(min_length=1, max_length=256), AfterValidator(_printable_text)
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupRequest(Body):
    email: EmailStr
    password: NewPassword


class LoginRequest(Body):
    email: EmailStr
    password: GivenPassword


class EraseAccountRequest(Body):
    password: GivenPassword


class ChangePasswordRequest(Body):
    current_password: GivenPassword
    new_password: NewPassword


MailToken = Annotated[str, Field(min_length=1, max_length=512)]


class VerifyEmailRequest(Body):
    token: MailToken


class ForgotPasswordRequest(Body):
    email: EmailStr


class ResetPasswordRequest(Body):
    token: MailToken
    new_password: NewPassword


class RefreshRequest(Body):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class UserResponse(BaseModel):
    id: UUID
    email: str
    role: Literal["USER", "ADMIN"]
    is_verified: bool
    created_at: datetime
    mfa_enabled: bool = Field(description="Whether logins ask for a second factor.")

    @classmethod
    def of(cls, row: UserRow) -> Self:
        return cls.model_validate(row, from_attributes=True)


class AdminUserResponse(UserResponse):
    updated_at: datetime
    locked_until: datetime | None
    failed_logins: int
    disabled: bool


class UpdateUserRequest(Body):
    role: Literal["USER", "ADMIN"] | None = None
    unlock: StrictBool = False  # `0`, `1` or `"true"` are not booleans
    disabled: StrictBool | None = None


class TimelineEntryResponse(BaseModel):
    at: datetime
    event: str
    session_id: UUID | None
    ip: str
    user_agent: str
    detail: str

    @classmethod
    def of(cls, entry: TimelineEntry) -> TimelineEntryResponse:
        return cls.model_validate(entry, from_attributes=True)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  (RFC 6750 type)
    expires_in: int = Field(description="Seconds until the access token expires.")
    user: UserResponse


class SessionResponse(BaseModel):
    id: UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str
    user_agent: str
    current: bool
    factors: list[Literal["pwd", "otp", "recovery_code"]] = Field(
        description="What its login proved: a password, a TOTP code, a recovery code."
    )

    @classmethod
    def of(cls, row: SessionRow, current_session: UUID) -> SessionResponse:
        return cls(
            id=row.session_id,
            created_at=row.created_at,
            last_used_at=row.last_rotated_at,
            expires_at=row.expires_at,
            ip=row.ip,
            user_agent=row.user_agent,
            current=row.session_id == current_session,
            factors=row.factors,
        )


# A TOTP code (6 digits) or a recovery code ("03kq7x-2m9fp"), as typed.
OneTimeCode = Annotated[
    str, Field(min_length=6, max_length=32), AfterValidator(_printable_text)
]


class EnrolTotpRequest(Body):
    password: GivenPassword


class TotpEnrolmentResponse(BaseModel):
    secret: str = Field(description="Base32, for apps that take it typed.")
    otpauth_uri: str = Field(description="For apps that scan it as a QR code.")


class CodeRequest(Body):
    code: OneTimeCode


class RecoveryCodesResponse(BaseModel):
    recovery_codes: list[str] = Field(
        description="Each logs in once instead of a TOTP code; shown this once."
    )


class VerifyMfaRequest(Body):
    mfa_token: Annotated[
        str, Field(min_length=1, max_length=256), AfterValidator(_printable_text)
    ]
    code: OneTimeCode


class DisableMfaRequest(Body):
    password: GivenPassword
    code: OneTimeCode


class MfaRequiredResponse(BaseModel):
    detail: str
    code: Literal["mfa_required"]
    mfa_token: str = Field(description="Send it to /api/auth/mfa/verify with a code.")
    expires_in: int = Field(description="Seconds the mfa_token lives.")


class MessageResponse(BaseModel):
    detail: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="Human-readable explanation.")
    code: str = Field(description="Stable machine-readable error code.")
    errors: list[FieldError] | None = None


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


ErrorResponse.model_rebuild()


# A position in the log, as a string: positions exceed what a JSON number
# holds exactly.
Cursor = Annotated[str, Field(pattern=r"^[0-9]{1,18}$", examples=["0"])]
EventType = Annotated[str, Field(max_length=80, pattern=r"^[a-z_]+\.[a-z_]+$")]


class FeedEventResponse(BaseModel):
    cursor: Cursor
    type: str = Field(examples=["user.registered"])
    aggregate_id: UUID
    version: int
    time: datetime
    payload: dict[str, Any] = Field(
        description="The event's fields but hashes and secrets; personal data"
        " while its owner's data key lives, `[erased]` after."
    )


class EventPageResponse(BaseModel):
    events: list[FeedEventResponse]
    next: Cursor = Field(description="Pass it as `after` for the next page.")
    at_head: bool = Field(description="Nothing more to read now: poll later.")


class WebhookRequest(Body):
    url: Annotated[
        str, Field(min_length=8, max_length=2048), AfterValidator(_printable_text)
    ]
    event_types: Annotated[list[EventType], Field(max_length=100)] = Field(
        default_factory=list, description="Only these types; every type if empty."
    )


class ReplayRequest(Body):
    from_: Cursor = Field(
        alias="from", description="The cursor of the first event to send again."
    )


class WebhookAttemptResponse(BaseModel):
    cursor: Cursor
    webhook_id: str
    attempted_at: datetime
    duration_ms: int | None
    status: int | None
    error: str | None


class WebhookResponse(BaseModel):
    id: UUID
    url: str
    event_types: list[str]
    added_at: datetime
    added_by: str
    state: Literal["active", "retrying", "failing"] = Field(
        description="`retrying` after a failed delivery, `failing` once it has"
        " failed for AUTHLEDGER_WEBHOOK_FAILING_AFTER_S (a day by default)."
    )
    cursor: Cursor | None = Field(description="The last event delivered.")
    delivered: int
    failed_attempts: int = Field(description="Failed deliveries in a row.")
    next_attempt_at: datetime | None
    failing_since: datetime | None
    last_error: str | None
    last_delivered_at: datetime | None
    recent_attempts: list[WebhookAttemptResponse] = Field(default_factory=list)


class NewWebhookResponse(WebhookResponse):
    secret: str = Field(
        description="The signing secret (Standard Webhooks), shown this once."
    )
