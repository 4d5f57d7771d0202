"""/api/admin: users and their histories, for callers whose role is ADMIN."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query

from application.errors import UserNotFoundError
from application.values import AccountChanges
from domain.values import Role
from interfaces.http.deps import ClientDep, CurrentUser, CurrentUserDep, ServicesDep
from interfaces.http.errors import ERROR_RESPONSES, ForbiddenError
from interfaces.http.schemas import (
    AdminUserResponse,
    MessageResponse,
    PrintableText,
    TimelineEntryResponse,
    UpdateUserRequest,
)

PageSize = Annotated[int, Query(ge=1, le=500)]
# Deeper than any real page, and far below what a database integer holds.
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def require_admin(current: CurrentUserDep) -> CurrentUser:
    """The caller, if their role now (in the read model, not the token) is ADMIN."""
    if current.user.role != Role.ADMIN:
        raise ForbiddenError
    return current


AdminDep = Annotated[CurrentUser, Depends(require_admin)]
router = APIRouter(prefix="/api/admin", tags=["admin"], responses=ERROR_RESPONSES)


@router.get("/users")
def list_users(
    _: AdminDep,
    services: ServicesDep,
    email_prefix: Annotated[PrintableText, Query(max_length=254)] = "",
    limit: PageSize = 50,
    offset: Offset = 0,
) -> list[AdminUserResponse]:
    """Page through users in email order, optionally those whose email starts so."""
    rows = services.users.list_users(email_prefix, limit, offset)
    return [AdminUserResponse.of(row) for row in rows]


@router.get("/users/{user_id}/history")
def user_history(
    user_id: UUID,
    _: AdminDep,
    services: ServicesDep,
    limit: PageSize = 100,
    offset: Offset = 0,
) -> list[TimelineEntryResponse]:
    """The user's timeline, paged in time order (as `authledger audit history`)."""
    if services.users.get_user(user_id) is None:
        raise UserNotFoundError(user_id)
    rows = services.history.history(user_id, limit, offset)
    return [TimelineEntryResponse.of(row.entry()) for row in rows]


@router.delete("/users/{user_id}")
def erase_user(
    user_id: UUID, admin: AdminDep, services: ServicesDep, client: ClientDep
) -> MessageResponse:
    """Erase the account (see DELETE /api/auth/me), naming the acting admin."""
    if services.users.get_user(user_id) is None:
        raise UserNotFoundError(user_id)
    services.app.erase(user_id, admin.user.id, client)
    return MessageResponse(detail="User erased.")


@router.delete("/users/{user_id}/mfa")
def reset_mfa(
    user_id: UUID, admin: AdminDep, services: ServicesDep, client: ClientDep
) -> MessageResponse:
    """Turn the account's MFA off (its owner lost the device), naming the
    acting admin; its sessions go on."""
    if services.users.get_user(user_id) is None:
        raise UserNotFoundError(user_id)
    services.mfa.reset(user_id, admin.user.id, client)
    return MessageResponse(detail="MFA reset.")


@router.patch("/users/{user_id}")
def update_user(
    user_id: UUID,
    body: UpdateUserRequest,
    admin: AdminDep,
    services: ServicesDep,
    client: ClientDep,
) -> AdminUserResponse:
    """Change a user's role, lift a lock, disable or enable the account, all
    in one save or none; the events name the acting admin. Disabling ends
    every session at once."""
    changes = AccountChanges(
        role=Role(body.role) if body.role is not None else None,
        unlock=body.unlock,
        disabled=body.disabled,
    )
    services.app.administer(user_id, changes, admin.user.id, client)
    row = services.users.get_user(user_id)
    if row is None:
        raise UserNotFoundError(user_id)
    return AdminUserResponse.of(row)
