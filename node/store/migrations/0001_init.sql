-- The first schema of the PostgreSQL store. Text that must sort like the
-- Badger keys (paths, child names) uses the "C" collation, which compares
-- bytes; records are bytea because kinds and keys are arbitrary bytes.
--
-- doc columns hold the model's CBOR encoding (model.Marshal), which stays the
-- source of truth; the other columns are copies of fields the store filters,
-- orders or indexes on.

CREATE TABLE meta (
	id        boolean PRIMARY KEY DEFAULT true CHECK (id),
	last_seq  bigint  NOT NULL DEFAULT 0, -- last committed log sequence number
	first_seq bigint  NOT NULL DEFAULT 0  -- first retained one; 0: never compacted
);
INSERT INTO meta DEFAULT VALUES;

CREATE TABLE contexts (
	path    text COLLATE "C" PRIMARY KEY,
	parent  text COLLATE "C",          -- NULL only for the root
	name    text COLLATE "C" NOT NULL, -- last segment of path
	type    text   NOT NULL,
	tenant  text   NOT NULL,
	labels  jsonb  NOT NULL,
	version bigint NOT NULL,
	doc     bytea  NOT NULL
);
-- One level of children in name order, answered from the index alone.
CREATE UNIQUE INDEX contexts_children ON contexts (parent, name) INCLUDE (type, tenant);
-- Inventory filters: by tenant and type, and by labels (@> containment).
CREATE INDEX contexts_tenant_type ON contexts (tenant, type);
CREATE INDEX contexts_labels ON contexts USING gin (labels jsonb_path_ops);

CREATE TABLE events (
	path  text COLLATE "C" NOT NULL,
	seq   bigint      NOT NULL,
	time  timestamptz NOT NULL,
	level text        NOT NULL,
	doc   bytea       NOT NULL,
	PRIMARY KEY (path, seq)
);
-- Pruning by age.
CREATE INDEX events_time ON events (time);

CREATE TABLE log (
	seq bigint PRIMARY KEY,
	doc bytea  NOT NULL
);

CREATE TABLE records (
	kind  bytea NOT NULL,
	key   bytea NOT NULL,
	value bytea NOT NULL,
	PRIMARY KEY (kind, key)
);
