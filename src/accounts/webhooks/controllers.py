"""HTTP endpoints for webhooks (admins only): CRUD, secret rotation, the delivery log and redelivery."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.clients.schemas import SecretRotation
from accounts.core.errors import problem_responses
from accounts.core.http.idempotency import IdempotencyMiddleware
from accounts.core.http.media import NegotiatedResponse
from accounts.core.http.openapi import LOCATION_HEADER
from accounts.core.security import AUTHENTICATED, AuthenticatedRequest, requires_admin
from accounts.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookRead,
    WebhookUpdate,
)
from accounts.webhooks.services import (
    DeliveryService,
    WebhookService,
    to_delivery_read,
    to_webhook_read,
    with_secret,
)


def provide_webhooks(db_session: NamedDependency[AsyncSession], state: State) -> WebhookService:
    return WebhookService(db_session, state.settings)


def provide_deliveries(db_session: NamedDependency[AsyncSession]) -> DeliveryService:
    return DeliveryService(session=db_session)


WebhookId = Annotated[UUID, Parameter(description="The webhook's id.")]
DeliveryId = Annotated[UUID, Parameter(description="The delivery's id.")]


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]
    guards = [requires_admin]
    security = AUTHENTICATED
    dependencies = {
        "webhooks": Provide(provide_webhooks, sync_to_thread=False),
        "deliveries": Provide(provide_deliveries, sync_to_thread=False),
    }

    @post(
        name="createWebhook",
        middleware=[IdempotencyMiddleware],
        summary="Create a webhook endpoint (the secret is shown once)",
        description="Events whose type matches `event_types` are POSTed to `url`, signed as Standard Webhooks has it"
        " (`webhook-id`, `webhook-timestamp`, `webhook-signature`), at least once, in order per subject. The URL is"
        " refused (400) unless it is http(s) without credentials and its host resolves to public addresses.",
        status_code=201,
        response_headers=[LOCATION_HEADER],
        responses=problem_responses(400, 401, 403, 413, 415),
    )
    async def create_webhook(
        self, webhooks: NamedDependency[WebhookService], request: AuthenticatedRequest, data: JSONBody[WebhookCreate]
    ) -> Response[WebhookCreated]:
        webhook, secret = await webhooks.create_webhook(data, created_by=request.user.user_id)
        location = request.app.route_reverse("getWebhook", webhook_id=str(webhook.id))
        return NegotiatedResponse(with_secret(webhook, secret), status_code=201, headers={"Location": location})

    @get(name="listWebhooks", summary="List webhook endpoints", responses=problem_responses(401, 403))
    async def list_webhooks(self, webhooks: NamedDependency[WebhookService]) -> WebhookList:
        return WebhookList(items=[to_webhook_read(w) for w in await webhooks.get_many(order_by=[("created_at", True)])])

    @get(
        "/{webhook_id:str}",
        name="getWebhook",
        summary="Read a webhook endpoint",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def get_webhook(self, webhooks: NamedDependency[WebhookService], webhook_id: WebhookId) -> WebhookRead:
        return to_webhook_read(await webhooks.get(webhook_id))

    @patch(
        "/{webhook_id:str}",
        name="updateWebhook",
        summary="Update a webhook endpoint",
        description="Only the fields sent change. `enabled: true` turns an endpoint disabled by failures back on: its"
        " failure count starts again and its pending deliveries are tried at once.",
        responses=problem_responses(400, 401, 403, 404, 413, 415),
    )
    async def update_webhook(
        self, webhooks: NamedDependency[WebhookService], webhook_id: WebhookId, data: JSONBody[WebhookUpdate]
    ) -> WebhookRead:
        return to_webhook_read(await webhooks.update_webhook(webhook_id, data))

    @delete(
        "/{webhook_id:str}",
        name="deleteWebhook",
        summary="Delete a webhook endpoint",
        description="Nothing more is sent to it; its delivery log goes too.",
        status_code=204,
        responses=problem_responses(400, 401, 403, 404),
    )
    async def delete_webhook(self, webhooks: NamedDependency[WebhookService], webhook_id: WebhookId) -> None:
        await webhooks.delete_webhook(webhook_id)

    @post(
        "/{webhook_id:str}/rotate-secret",
        name="rotateWebhookSecret",
        summary="Give a webhook endpoint a new secret (shown once)",
        description="For `overlap_seconds` (`{}` for the default, a day) deliveries carry a signature by the current"
        " secret beside the new one's, so the receiver can switch without missing one; the secret before it stops"
        " at once.",
        status_code=200,
        responses=problem_responses(400, 401, 403, 404, 413, 415),
    )
    async def rotate_webhook_secret(
        self, webhooks: NamedDependency[WebhookService], webhook_id: WebhookId, data: JSONBody[SecretRotation]
    ) -> WebhookCreated:
        webhook, secret = await webhooks.rotate_secret(webhook_id, data.overlap_seconds)
        return with_secret(webhook, secret)

    @get(
        "/{webhook_id:str}/deliveries",
        name="listWebhookDeliveries",
        summary="The delivery log of a webhook endpoint",
        description="Newest first: each event sent (or to be sent) to the endpoint, its attempts, the last answer's"
        " status and latency, the last error, and when it is tried next.",
        responses=problem_responses(400, 401, 403, 404),
    )
    async def list_webhook_deliveries(
        self,
        deliveries: NamedDependency[DeliveryService],
        webhook_id: WebhookId,
        *,
        limit: Annotated[int, Parameter(ge=1, le=200, description="Page size.")] = 20,
        offset: Annotated[int, Parameter(ge=0, le=10_000_000, description="Rows to skip.")] = 0,
        status: Annotated[DeliveryStatus | None, Parameter(description="Only deliveries in this state.")] = None,
    ) -> DeliveryPage:
        return await deliveries.page(webhook_id, limit=limit, offset=offset, status=status)

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/redeliver",
        name="redeliverWebhook",
        summary="Send a delivery again",
        description="Answers 202: the delivery is pending again, with a fresh retry window, and is sent shortly"
        " (with the same `webhook-id`, so a receiver that had it de-duplicates).",
        status_code=202,
        responses=problem_responses(400, 401, 403, 404),
    )
    async def redeliver_webhook(
        self, deliveries: NamedDependency[DeliveryService], webhook_id: WebhookId, delivery_id: DeliveryId
    ) -> DeliveryRead:
        return to_delivery_read(await deliveries.redeliver(webhook_id, delivery_id))
