-- The writer's fence (postgres_fence.go). Replicas of a cluster share the
-- database; the one Raft elected writes. fence holds the term and replica
-- id of the writer that last claimed it: one row, term 0 until a cluster
-- claims it. A fenced store's every write runs fence_check first, in its
-- own transaction: the check takes the row FOR SHARE, so a Claim (which
-- updates the row) waits for writes in flight to end, and a write that
-- starts after a Claim committed sees the new term and fails with
-- SQLSTATE SF001, rolling back everything it did.
CREATE TABLE fence (
    id      smallint PRIMARY KEY CHECK (id = 1),
    term    bigint NOT NULL CHECK (term >= 0),
    replica text NOT NULL,
    claimed timestamptz NOT NULL DEFAULT now()
);
INSERT INTO fence (id, term, replica) VALUES (1, 0, '');

CREATE FUNCTION fence_check(t bigint, r text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    cur    bigint;
    holder text;
BEGIN
    SELECT term, replica INTO cur, holder FROM fence WHERE id = 1 FOR SHARE;
    IF cur IS DISTINCT FROM t OR holder IS DISTINCT FROM r THEN
        RAISE EXCEPTION 'the writer is term % of replica "%", not term % of replica "%"', cur, holder, t, r
            USING ERRCODE = 'SF001';
    END IF;
END
$$;
