-- Inventory search (search.go): the variable values of each context as one
-- JSON object {name: value}, searched by containment (@>) through a GIN
-- index, like labels. NULL marks a row written before this column existed:
-- the store fills those in at open (backfillVars), since the values are in
-- the CBOR doc, which SQL cannot read.
ALTER TABLE contexts ADD COLUMN vars jsonb;
CREATE INDEX contexts_vars ON contexts USING gin (vars jsonb_path_ops);
