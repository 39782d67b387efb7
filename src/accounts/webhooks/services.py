"""Webhooks: the service that writes `webhooks` (CRUD, secret rotation, each change an event in its transaction),
and the delivery log's reads and manual redelivery. Sending is the worker's (accounts.webhooks.jobs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, schema_dump
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from accounts.config import Settings
from accounts.core.db import PRIMARY
from accounts.core.errors import FieldError, InvalidInput, NotFound
from accounts.events.schemas import AUDIT_ONLY_TYPES, EVENT_TYPES
from accounts.events.services import Subject, record
from accounts.webhooks import urls
from accounts.webhooks.models import Webhook, WebhookDelivery
from accounts.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from accounts.webhooks.signing import new_secret, secret_text

WAKE_CHANNEL = "accounts_webhooks"
"""Notified when deliveries become due outside the feed (a redelivery, an endpoint enabled again): the dispatcher
listens and enqueues them at once instead of at its next periodic sweep."""
FEED_TYPES = frozenset(EVENT_TYPES) - AUDIT_ONLY_TYPES
"""The types a webhook can receive: every feed event (audit-only ones never leave the audit trail)."""


def matches(patterns: list[str], event_type: str) -> bool:
    """Whether an endpoint's `event_types` (exact types, `prefix.*`, `*`) take events of `event_type`."""
    return any(
        pattern in ("*", event_type) or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in patterns
    )


def _checked_types(patterns: list[str]) -> list[str]:
    """The patterns, once each in the order given; a 400 naming the first that matches no feed event type."""
    for index, pattern in enumerate(patterns):
        if not any(matches([pattern], known) for known in FEED_TYPES):
            detail = f"{pattern!r} matches no event type (see the event catalogue; audit-only types are not sent)."
            raise InvalidInput(detail, errors=[FieldError(field=f"event_types[{index}]", message=detail)])
    return list(dict.fromkeys(patterns))


def shown_url(url: str) -> str:
    """The URL as events show it: without its query, which may carry the receiver's own token."""
    return url.split("?", 1)[0]


class WebhookService(SQLAlchemyAsyncRepositoryService[Webhook]):
    class Repo(SQLAlchemyAsyncRepository[Webhook]):
        model_type = Webhook

    repository_type = Repo

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        super().__init__(session=session)
        self.settings = settings

    async def _checked_url(self, url: str) -> str:
        await urls.check(url, allow_private=self.settings.webhook_allow_private_urls)
        return url

    async def create_webhook(self, data: WebhookCreate, created_by: UUID | None) -> tuple[Webhook, str]:
        """A new endpoint; its secret is returned once."""
        key = new_secret()
        values = {
            "url": await self._checked_url(data.url),
            "event_types": _checked_types(data.event_types),
            "description": data.description,
            "secret": key,
            "enabled": True,
            "consecutive_failures": 0,
            "created_by": created_by,
        }
        webhook = await self.create(values)
        await record(
            self.repository.session,
            "webhook.created",
            Subject("webhook", webhook.id),
            {"url": shown_url(webhook.url), "event_types": webhook.event_types},
        )
        return webhook, secret_text(key)

    async def update_webhook(self, webhook_id: UUID, data: WebhookUpdate) -> Webhook:
        """Change the fields sent; `enabled: true` on a disabled endpoint starts its failure count again and makes
        its pending deliveries due now."""
        webhook: Webhook = await self.repository.get(webhook_id, bind_group=PRIMARY, with_for_update=True)
        sent: dict[str, Any] = schema_dump(data)
        if "url" in sent:
            sent["url"] = await self._checked_url(sent["url"])
        if "event_types" in sent:
            sent["event_types"] = _checked_types(sent["event_types"])
        changes = {name: value for name, value in sent.items() if getattr(webhook, name) != value}
        if not changes:
            return webhook
        values = dict(changes)
        if changes.get("enabled") is True:
            values |= {"disabled_at": None, "consecutive_failures": 0}
        elif changes.get("enabled") is False:
            values["disabled_at"] = None  # turned off by hand, not by failures
        webhook = await self.update(values, item_id=webhook_id, bind_group=PRIMARY)
        if changes.get("enabled") is True:
            await self._make_pending_due(webhook_id)
        if "url" in changes:
            changes["url"] = shown_url(changes["url"])
        await record(self.repository.session, "webhook.updated", Subject("webhook", webhook_id), {"changes": changes})
        return webhook

    async def _make_pending_due(self, webhook_id: UUID) -> None:
        session = self.repository.session
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == "pending")
            .values(next_attempt_at=datetime.now(UTC), first_attempt_at=None)
        )
        await session.execute(text(f"NOTIFY {WAKE_CHANNEL}"))

    async def rotate_secret(self, webhook_id: UUID, overlap_seconds: int) -> tuple[Webhook, str]:
        """A new secret; deliveries are signed with the current one too for `overlap_seconds` (the one before it
        stops now)."""
        # On the primary, locked: two rotations at once must not both keep the same previous secret.
        webhook = await self.repository.get(webhook_id, bind_group=PRIMARY, with_for_update=True)
        key = new_secret()
        now = datetime.now(UTC)
        values = {
            "secret": key,
            "previous_secret": webhook.secret if overlap_seconds else None,
            "previous_secret_expires_at": now + timedelta(seconds=overlap_seconds) if overlap_seconds else None,
            "secret_rotated_at": now,
        }
        webhook = await self.update(values, item_id=webhook_id, bind_group=PRIMARY)
        await record(self.repository.session, "webhook.secret_rotated", Subject("webhook", webhook_id))
        return webhook, secret_text(key)

    async def delete_webhook(self, webhook_id: UUID) -> None:
        """Delete the endpoint and its delivery log; nothing more is sent to it."""
        await self.delete(webhook_id, bind_group=PRIMARY)
        await record(self.repository.session, "webhook.deleted", Subject("webhook", webhook_id))


class DeliveryService(SQLAlchemyAsyncRepositoryService[WebhookDelivery]):
    """The delivery log of an endpoint, and redelivery; the worker writes attempts (accounts.webhooks.jobs)."""

    class Repo(SQLAlchemyAsyncRepository[WebhookDelivery]):
        model_type = WebhookDelivery

    repository_type = Repo

    async def _ensure_webhook(self, webhook_id: UUID) -> None:
        found = await self.repository.session.scalar(text("SELECT 1 FROM webhooks WHERE id = :id"), {"id": webhook_id})
        if found is None:
            raise NotFound(f"No webhook has the id {webhook_id}.")

    async def page(
        self, webhook_id: UUID, *, limit: int, offset: int, status: DeliveryStatus | None = None
    ) -> DeliveryPage:
        await self._ensure_webhook(webhook_id)
        conditions = [WebhookDelivery.webhook_id == webhook_id]
        if status is not None:
            conditions.append(WebhookDelivery.status == status)
        items, total = await self.get_many_and_count(
            *conditions, LimitOffset(limit=limit, offset=offset), OrderBy("sequence", "desc")
        )
        return DeliveryPage(items=[to_delivery_read(item) for item in items], total=total, limit=limit, offset=offset)

    async def redeliver(self, webhook_id: UUID, delivery_id: UUID) -> WebhookDelivery:
        """Send the delivery again, whatever became of it, with a fresh retry window (its receiver de-duplicates by
        `webhook-id` if it had it already)."""
        await self._ensure_webhook(webhook_id)
        delivery = await self.repository.get_one_or_none(id=delivery_id, webhook_id=webhook_id, bind_group=PRIMARY)
        if delivery is None:
            raise NotFound(f"Webhook {webhook_id} has no delivery {delivery_id}.")
        values = {"status": "pending", "next_attempt_at": datetime.now(UTC), "first_attempt_at": None}
        delivery = await self.update(values, item_id=delivery_id, bind_group=PRIMARY)
        await self.repository.session.execute(text(f"NOTIFY {WAKE_CHANNEL}"))
        return delivery


def to_webhook_read(webhook: Webhook) -> WebhookRead:
    """The wire form of an endpoint (never its secret)."""
    expires = webhook.previous_secret_expires_at
    return WebhookRead(
        id=webhook.id,
        url=webhook.url,
        event_types=webhook.event_types,
        description=webhook.description,
        enabled=webhook.enabled,
        disabled_at=webhook.disabled_at,
        consecutive_failures=webhook.consecutive_failures,
        created_by=webhook.created_by,
        created_at=webhook.created_at,
        updated_at=webhook.updated_at,
        secret_rotated_at=webhook.secret_rotated_at,
        previous_secret_expires_at=expires if expires is not None and expires > datetime.now(UTC) else None,
    )


def with_secret(webhook: Webhook, secret: str) -> WebhookCreated:
    """The endpoint and its new secret, the one answer that shows the secret."""
    return WebhookCreated(**msgspec.structs.asdict(to_webhook_read(webhook)), secret=secret)


def to_delivery_read(delivery: WebhookDelivery) -> DeliveryRead:
    return DeliveryRead(
        id=delivery.id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status,  # type: ignore[arg-type]  # the column holds only DeliveryStatus values
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_latency_ms=delivery.last_latency_ms,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
    )
