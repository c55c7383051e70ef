package store

// SyncReadReplicas makes the reads this store sends to its read replicas
// wait (on the primary meanwhile) until the replicas have replayed every
// commit made so far, through any process: a replica of a cluster calls
// it before it shows entries another process committed, so that its reads
// that tolerate staleness are never older than what it shows (read your
// writes across replicas). Without read replicas it costs nothing.
func (s *Postgres) SyncReadReplicas() { s.recordCommit() }
