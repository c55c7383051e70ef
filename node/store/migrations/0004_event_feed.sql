-- The event feed (postgres_feed.go): the notable events (level warning or
-- alert) of a subtree, newest first, read through partial indexes that
-- hold only notable events: by sequence number for system readers, by
-- tenant then sequence number for a tenant's (its own and the shared
-- ones). tenant is the event's (its context's when it was recorded), as
-- in the CBOR doc; NULL marks a row written before this column existed,
-- which the store fills in at open for notable events (backfillFeed).
ALTER TABLE events ADD COLUMN tenant text;
CREATE INDEX events_feed ON events (seq DESC) WHERE level IN ('warning', 'alert');
CREATE INDEX events_feed_tenant ON events (tenant, seq DESC) WHERE level IN ('warning', 'alert');
