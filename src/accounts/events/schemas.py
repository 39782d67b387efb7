"""What goes over the wire for events: the event, a feed page, an audit page; and the catalogue of event types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from msgspec import Meta, Struct

ActorType = Literal["user", "api_key", "client", "system"]

EVENT_TYPES: dict[str, str] = {
    "user.created": "A user was created (API, sign-up, CLI or an import). data: email, username, full_name, is_active,"
    " is_superuser; `source` is `import` with `job_id` for an imported user.",
    "user.updated": "A user's profile or flags changed. data: `changes`, each changed field and its new value (email,"
    " username, full_name, bio, is_active, is_superuser); only fields whose value changed.",
    "user.deactivated": "is_active went from true to false (with the user.updated of the same change). data: {}.",
    "user.reactivated": "is_active went from false to true (with the user.updated of the same change). data: {}.",
    "user.deleted": "A user was deleted, with their tokens and keys. data: {}.",
    "user.email_verified": "A user proved their address (a verification link or a password reset). data: email.",
    "user.password_changed": "A user's password was set or changed; every earlier token stopped working. data: `how`"
    " (`change` or `reset`).",
    "user.logged_out_everywhere": "Every access token issued to the user before now stopped working. data: {}.",
    "client.created": "A service client was created. data: name, scopes.",
    "client.deleted": "A service client was deleted. data: {}.",
    "client.secret_rotated": "A service client's secret was rotated (never the secret itself). data:"
    " previous_valid_until (when the previous one stops working; null: at once).",
    "client.keys_changed": "A service client's public keys (private_key_jwt) were replaced. data: keys, each its kty"
    " and kid (null without one); an empty list when it has none left.",
    "import.finished": "A bulk import job ended. data: job_id, status, created, updated, failed, owner.",
    "export.finished": "A bulk export job ended. data: job_id, status, exported, owner.",
    "session.revoked": "A session (a login and its refresh-token family) ended; its tokens stopped working. data:"
    " session_id, reason (ended, logout, logged out everywhere, password changed, password reset).",
    "session.reuse_detected": "A used refresh token was presented again; its session was ended. data: session_id,"
    " reason.",
    "api_key.created": "An API key was created (never its secret). data: name, prefix, scopes, expires_at.",
    "api_key.revoked": "An API key was revoked. data: {}.",
    "mfa.enabled": "A second factor was added to a user. data: kind (`totp`).",
    "mfa.disabled": "A second factor was removed from a user. data: kind (`totp`); `reset` when an admin did it.",
    "passkey.registered": "A passkey was registered for a user. data: credential name.",
    "passkey.removed": "A passkey was removed from a user. data: {}.",
    "webhook.created": "A webhook endpoint was created (never its secret). data: url, event_types.",
    "webhook.updated": "A webhook endpoint changed. data: `changes`.",
    "webhook.deleted": "A webhook endpoint was deleted. data: {}.",
    "webhook.secret_rotated": "A webhook endpoint's secret was rotated. data: {}.",
    "webhook.disabled": "A webhook endpoint was disabled after a run of failed deliveries. data: failures.",
    "login.succeeded": "Audit only: a user logged in. data: method (the token's amr: `pwd`, `pwd otp mfa`, ...),"
    " session_id.",
    "login.failed": "Audit only: a login to an existing account failed. data: method (password, otp, recovery_code,"
    " passkey), reason.",
}
"""Every event type and what its `data` holds. None carries a password, hash, token or secret."""
AUDIT_ONLY_TYPES = frozenset({"login.succeeded", "login.failed"})
"""Types kept in the audit trail only: never in the feed, the streams, webhooks or NATS."""

EventType = Annotated[
    str,
    Meta(min_length=1, max_length=64, pattern=r"^[a-z_]+(?:\.[a-z_]+)+$", description="A dotted event type."),
]


class EventSubject(Struct, kw_only=True):
    """What the event is about."""

    type: Annotated[str, Meta(description="`user`, `client`, `job`, `session`, `api_key`, `webhook`, ...")]
    id: str


class EventActor(Struct, kw_only=True):
    """Who made the change: a user (by access token), an API key, a service client, or the system (jobs, the CLI)."""

    type: ActorType
    id: str | None = None


class EventRead(Struct, kw_only=True):
    """One event. Every consumer de-duplicates by `id`: delivery is at least once."""

    id: UUID
    type: Annotated[str, Meta(description="A dotted type from the catalogue, e.g. `user.updated`.")]
    occurred_at: datetime
    subject: EventSubject
    actor: EventActor
    request_id: Annotated[str | None, Meta(description="The request that made the change; null for jobs.")]
    data: dict[str, Any]


class EventPage(Struct, kw_only=True):
    """Feed events after the cursor, in cursor order; pass `next` as `after` for the following page (it moves on even
    when the page is empty or filtered, so a poller never rescans)."""

    items: list[EventRead]
    next: Annotated[str, Meta(description="Opaque cursor: the `after` of the next call.")]


class AuditPage(Struct, kw_only=True):
    """One page of the audit trail, newest first, and the number of events that match the filters."""

    items: list[EventRead]
    total: int
    limit: int
    offset: int
