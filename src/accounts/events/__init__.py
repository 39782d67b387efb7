"""Events: every change recorded in its own transaction, read four ways (the feed, SSE streams, webhooks, NATS).

Writing (in the change's transaction; committed with it or not at all):

    from accounts.events.services import Subject, record, record_on

    await record(session, "user.updated", Subject("user", user_id), {"changes": {"bio": "..."}})  # AsyncSession
    await record_on(connection, "import.finished", Subject("job", job_id), {...})  # asyncpg connection
    await record(session, "login.succeeded", Subject("user", user.id), {"method": "password"},
                 actor=EventActor(type="user", id=str(user.id)))  # an explicit actor (no principal yet)

`type_` must be in `accounts.events.schemas.EVENT_TYPES` (the catalogue, with what each `data` holds); types in
`AUDIT_ONLY_TYPES` (logins) go to the audit trail only. `data` is JSON-encodable and never holds a password,
hash, token or secret. The actor is the request's authenticated caller (`accounts.events.context`, read from the
request being served), else the system; the request id is the logging context's. Statements that write events
in SQL themselves take `actor_values()`.

Reading the feed (what webhooks and the NATS relay consume):

    feed = EventFeed(pool)                       # an asyncpg pool on the primary
    batch = await feed.read(after, limit=500, types=(...), subject=("user", id))  # FeedBatch(items, next)
    for item in batch.items: item.position, item.event   # Position(xid, seq), EventRead
    after = batch.next                           # store `next.cursor` (str); Position.parse(cursor) reads it back

Every committed feed event comes exactly once, in position order, whatever order transactions commit in; `next`
moves on even when a page is empty or filtered. `START` is the beginning, `await feed.head()` "from now on".

Waking on commit instead of polling: every commit of feed events is announced on channel `accounts_events`
(`accounts.events.services.CHANNEL`; payload: a committing transaction's xid). In an API worker the announcement
is sent after the commit by the worker's `EventBroadcaster` (coalesced over 20 ms: notifying inside the writing
transactions would serialise their commits); elsewhere (job workers, the CLI) `record`/`record_on` notify in the
writing statement. `EventBroadcaster` (accounts.events.stream) is also the per-worker listener: one connection,
one feed read per wake while a stream is open, the recent tail kept in memory, and
`await broadcaster.changed(timeout)` for any number of waiters.
"""
