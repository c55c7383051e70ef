-- Inventory search in one index (postgres_search.go): the tenant, labels
-- and variable values of each context in one JSON document, {"n": tenant,
-- "l": {labels}, "v": {name: value}}, with one jsonb_path_ops GIN index. A
-- query puts all its filters in one containment (props @> ...), so the GIN
-- scan intersects the posting lists of every filter, driven by the rarest,
-- instead of reading whole lists of common values from two indexes and
-- ANDing the bitmaps.
--
-- fastupdate is off: inserts go straight into the index rather than
-- through a pending list that every search would have to read in full.
--
-- NULL marks a row written before this column existed: the store fills
-- those in at open (backfillSearch), from the CBOR doc. labels and vars
-- stay (written as before) for other readers; their GIN indexes, which
-- only search used, go.
ALTER TABLE contexts ADD COLUMN props jsonb;
CREATE INDEX contexts_props ON contexts USING gin (props jsonb_path_ops) WITH (fastupdate = off);
DROP INDEX contexts_vars;
DROP INDEX contexts_labels;
-- The planner estimates a containment from sampled whole documents (the
-- share of them that hold every filter); more of them resolve the
-- selective filters worth an index scan from those matching enough rows
-- that walking the primary key in path order finds a page sooner.
ALTER TABLE contexts ALTER COLUMN props SET STATISTICS 1000;
