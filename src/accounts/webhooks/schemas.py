"""What goes over the wire for webhooks: endpoints, their one-time secrets, and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType

from accounts.users.schemas import ONE_LINE, whole_string

WebhookUrl = Annotated[
    str,
    Meta(
        min_length=8,
        max_length=2000,
        pattern=whole_string(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+"),
        description="Where deliveries are POSTed: http(s), no credentials; its host must resolve to public addresses"
        " (unless WEBHOOK_ALLOW_PRIVATE_URLS). Redirects are not followed.",
        examples=["https://hooks.example.com/accounts"],
    ),
]
EventTypePattern = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=whole_string(r"\*|[a-z_]+(?:\.[a-z_]+)*(?:\.\*)?"),
        description="An event type (`user.created`), every type under a prefix (`user.*`), or every type (`*`).",
        examples=["user.*"],
    ),
]
Description = Annotated[str, Meta(max_length=500, pattern=ONE_LINE, description="What the endpoint is for.")]
EventTypes = Annotated[list[EventTypePattern], Meta(min_length=1, max_length=50)]
DeliveryStatus = Literal["pending", "succeeded", "failed"]


class WebhookCreate(Struct, kw_only=True, forbid_unknown_fields=True):
    url: WebhookUrl
    event_types: EventTypes
    description: Description = ""


class WebhookUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields sent change. `enabled: true` turns a disabled endpoint back on: its failure count starts
    again and its pending deliveries are tried at once."""

    url: WebhookUrl | UnsetType = UNSET
    event_types: EventTypes | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class WebhookRead(Struct, kw_only=True):
    id: UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_at: datetime | None
    """When a run of failed deliveries disabled it (None while enabled)."""
    consecutive_failures: int
    """Deliveries that failed for good since the last successful one."""
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None
    previous_secret_expires_at: datetime | None
    """Until then deliveries are signed with the secret before the last rotation too; None when they are not."""


class WebhookCreated(WebhookRead, kw_only=True):
    secret: str
    """The signing secret (`whsec_<base64>`, Standard Webhooks). It is shown only in this response: store it now."""


class WebhookList(Struct, kw_only=True):
    items: list[WebhookRead]


class DeliveryRead(Struct, kw_only=True):
    """One event for the endpoint and how its attempts went."""

    id: UUID
    event_id: UUID
    """Sent as `webhook-id`: the same at every attempt, for the receiver's de-duplication."""
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    """When it is tried next (None once it succeeded or failed)."""
    last_attempt_at: datetime | None
    last_status_code: int | None
    """The HTTP status of the last attempt's answer (None: no answer, see `last_error`)."""
    last_latency_ms: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryPage(Struct, kw_only=True):
    """Deliveries of one endpoint, newest first."""

    items: list[DeliveryRead]
    total: int
    limit: int
    offset: int


REQUEST_EXAMPLES: tuple[Struct, ...] = (
    WebhookCreate(url="https://hooks.example.com/accounts", event_types=["user.*"], description="CRM sync"),
    WebhookUpdate(enabled=True),
)
"""The example of each request body of this domain, for the OpenAPI document."""
