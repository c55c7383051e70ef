-- The writer's fence (postgres_fence.go). Replicas of a cluster share the
-- database; the one Raft elected writes. fence holds the term and replica
-- id of the writer that last claimed it: one row, term 0 until a cluster
-- claims it. A fenced store's every write first reads the row FOR SHARE in
-- its own transaction and rolls back unless it names the store's writer:
-- a Claim (which updates the row) waits for writes in flight to end, and a
-- write that starts after a Claim committed sees the new term.
CREATE TABLE fence (
    id      smallint PRIMARY KEY CHECK (id = 1),
    term    bigint NOT NULL CHECK (term >= 0),
    replica text NOT NULL,
    claimed timestamptz NOT NULL DEFAULT now()
);
INSERT INTO fence (id, term, replica) VALUES (1, 0, '');
