"""/api/admin/events and /api/admin/webhooks: the log for other services,
pulled behind a cursor or pushed as signed webhooks (ADMIN only)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, status

from application.feed import MAX_PAGE
from domain.webhooks import WebhookEndpoint
from infrastructure.webhooks import (
    DeliveryState,
    delivery_states,
    endpoint_status,
    feed_record,
    recent_attempts,
)
from interfaces.http.deps import ServicesDep
from interfaces.http.errors import ERROR_RESPONSES
from interfaces.http.routes.admin import AdminDep
from interfaces.http.schemas import (
    Cursor,
    EventPageResponse,
    EventType,
    FeedEventResponse,
    MessageResponse,
    NewWebhookResponse,
    ReplayRequest,
    WebhookAttemptResponse,
    WebhookRequest,
    WebhookResponse,
)

RECENT_ATTEMPTS = 20
router = APIRouter(prefix="/api/admin", tags=["admin"], responses=ERROR_RESPONSES)


@router.get("/events")
def events(
    _: AdminDep,
    services: ServicesDep,
    after: Cursor = "0",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    type: Annotated[list[EventType] | None, Query()] = None,
    user_id: UUID | None = None,
) -> EventPageResponse:
    """Events in log order after the cursor `after`; follow `next` until
    `at_head`, then poll. Every event comes once, in order, however many are
    written meanwhile. `type` (repeatable) and `user_id` (the account's own
    events and its sessions') narrow it down."""
    page = services.feed.page(int(after), limit, type or (), user_id)
    return EventPageResponse(
        events=[FeedEventResponse(**feed_record(event)) for event in page.events],
        next=str(page.next),
        at_head=page.at_head,
    )


@router.post("/webhooks", status_code=status.HTTP_201_CREATED)
def add_webhook(
    body: WebhookRequest, admin: AdminDep, services: ServicesDep
) -> NewWebhookResponse:
    """Send the events recorded from now on (of `event_types`, or all) to
    `url`, signed with the secret shown in this answer only."""
    endpoint, secret = services.webhooks.add(
        body.url, body.event_types, str(admin.user.id)
    )
    shown = webhook_view(endpoint, None)
    return NewWebhookResponse(**shown.model_dump(), secret=secret)


@router.get("/webhooks")
def list_webhooks(_: AdminDep, services: ServicesDep) -> list[WebhookResponse]:
    """Every endpoint and how its delivery stands."""
    states = delivery_states(services.database_url)
    return [webhook_view(e, states.get(e.id)) for e in services.webhooks.endpoints()]


@router.get("/webhooks/{webhook_id}")
def get_webhook(
    webhook_id: UUID, _: AdminDep, services: ServicesDep
) -> WebhookResponse:
    """One endpoint, with its latest delivery attempts."""
    endpoint = services.webhooks.endpoint(webhook_id)
    state = delivery_states(services.database_url).get(webhook_id)
    attempts = recent_attempts(services.database_url, webhook_id, RECENT_ATTEMPTS)
    return webhook_view(endpoint, state).model_copy(
        update={
            "recent_attempts": [
                WebhookAttemptResponse(cursor=str(a.pop("position")), **a)
                for a in attempts
            ]
        }
    )


@router.delete("/webhooks/{webhook_id}")
def remove_webhook(
    webhook_id: UUID, admin: AdminDep, services: ServicesDep
) -> MessageResponse:
    """Stop sending to the endpoint (its deliveries' records stay)."""
    services.webhooks.remove(webhook_id, str(admin.user.id))
    return MessageResponse(detail="Webhook removed.")


@router.post("/webhooks/{webhook_id}/replay", status_code=status.HTTP_202_ACCEPTED)
def replay_webhook(
    webhook_id: UUID, body: ReplayRequest, admin: AdminDep, services: ServicesDep
) -> WebhookResponse:
    """Send again, in order, every event from the cursor `from` on."""
    endpoint = services.webhooks.replay(webhook_id, int(body.from_), str(admin.user.id))
    return webhook_view(
        endpoint, delivery_states(services.database_url).get(webhook_id)
    )


def webhook_view(
    endpoint: WebhookEndpoint, state: DeliveryState | None
) -> WebhookResponse:
    return WebhookResponse(**endpoint_status(endpoint, state))
