package jobs

// Stored returns job id as its record holds it, not as this service's
// memory does. On a cluster follower the memory follows the applied log
// on a goroutine of its own (Follow), so it may lag the records; a read
// that must reflect every acknowledged write (the API's consistent read,
// after the replica's read barrier) reads the record. Unknown ids are
// model.ErrNotFound.
func (s *Service) Stored(id string) (Job, error) { return s.load(id) }
