package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dm/strata/model"
)

// The writer's fence: the PostgreSQL mode of a cluster. The replicas of a
// node share one database; Raft elects the replica that writes. Election
// alone cannot keep a deposed leader from writing (it may not know yet
// that it was deposed, or a commit of its may be on the wire), so the
// database itself holds the fence: the fence table's one row names the
// term and replica of the writer that last claimed it (migration 0005).
//
//   - Claim(term, replica) takes the fence, only if its term is higher
//     than the stored one (or the same term by the same replica: a retry,
//     or a restart). From then on, this store's writes carry that term.
//   - Every write of a fenced store (Commit, CompactLog, PruneEvents)
//     reads the fence row FOR SHARE as its first statement, in its own
//     transaction (for Commit, in the same round trip as the batch), and
//     rolls the transaction back unless the row names the store's term and
//     replica. The row lock is one a Claim's UPDATE must wait for: a commit
//     in flight when another replica claims either commits before the
//     claim does, or sees the new term and fails, its transaction rolled
//     back whole. Never a partial write, never a write after the claim.
//   - A failed check is ErrFenced, which wraps model.ErrNotLeader (503
//     "unavailable" at the API): the write did not happen; the replica
//     must step down, and the client retries through the new leader.
//
// The procedure of a replica elected leader at term T (node/cluster):
// Claim(T, id); only then start (or restart) the model on the store —
// model.New reads LastSeq from the database, and after the claim nothing
// of an older term can commit, so the model's sequence numbers continue
// the log exactly after the deposed writer's last committed entry — and
// only then accept writes. A model that ran before the claim on this
// store (built from state read before it) must be closed and started
// again rather than reused.
//
// A store opened without PostgresOptions.Fenced checks nothing on its
// commits (the single-node default: no cost), but refuses to open on a
// database whose fence a cluster has claimed, so a stray single node
// cannot write behind a cluster's back.

// sqlFence reads the fence for a write, locking it against claims until
// the write's transaction ends.
const sqlFence = `SELECT term, replica FROM fence WHERE id = 1 FOR SHARE`

var (
	// ErrFenced refuses a write (or a Claim) of a writer whose term is not
	// the fence's: another replica claimed the database with a newer term,
	// or this store has not claimed it. Nothing was written.
	ErrFenced = fmt.Errorf("fenced: %w", model.ErrNotLeader)
	// ErrReadOnly refuses a write on a store opened ReadOnly (a follower).
	ErrReadOnly = fmt.Errorf("read-only store: %w", model.ErrNotLeader)
)

// writer is the term and replica a fenced store's writes carry.
type writer struct {
	term    uint64
	replica string
}

// fence is a Postgres store's side of fencing.
type fence struct {
	on      atomic.Bool            // writes check the fence (Fenced, or a Claim)
	claimed atomic.Pointer[writer] // nil until Claim succeeds
	refused atomic.Uint64          // writes refused by the check
	ended   atomic.Uint64          // sessions Claim ended (see Claim)
	wait    time.Duration          // ClaimWait
}

const defaultClaimWait = 5 * time.Second

// FenceStatus describes a store's fencing, for metrics and status pages.
type FenceStatus struct {
	Fenced   bool   // the store's writes check the fence
	Term     uint64 // the term its writes carry (0: not claimed)
	Replica  string // the replica id its writes carry
	Refused  uint64 // writes refused since open (ErrFenced)
	Ended    uint64 // sessions a Claim of this store ended (see Claim)
	ReadOnly bool   // the store was opened ReadOnly
}

// FenceStatus reports the store's fencing.
func (s *Postgres) FenceStatus() FenceStatus {
	st := FenceStatus{Fenced: s.fence.on.Load(), Refused: s.fence.refused.Load(), Ended: s.fence.ended.Load(), ReadOnly: s.readOnly}
	if w := s.fence.claimed.Load(); w != nil {
		st.Term, st.Replica = w.term, w.replica
	}
	return st
}

// Claim takes the database's fence for term and replica: it succeeds if
// the stored term is lower, or the same with the same replica (claiming
// again is safe), and otherwise fails with ErrFenced, changing nothing.
// It waits for writes in flight under an older term to end; once it
// returns, none can commit. Writes that hold the fence longer than
// ClaimWait (a deposed writer cut off from the database mid-commit, whose
// session the server keeps until TCP gives up on it) have their sessions
// ended with pg_terminate_backend (the role may end its own sessions),
// which rolls them back; so does any session queued before the claim on
// the fence row, each ClaimWait, until the claim gets through. On
// success this store becomes fenced (if it was not) and its writes carry
// term and replica. Then, and only then, read the store's state afresh
// (start the model on it: see above).
func (s *Postgres) Claim(ctx context.Context, term uint64, replica string) error {
	if s.readOnly {
		return fmt.Errorf("store: claim: %w", ErrReadOnly)
	}
	if term == 0 || term > 1<<63-1 {
		return fmt.Errorf("store: claim: %w: term %d out of range", model.ErrInvalid, term)
	}
	if replica == "" {
		return fmt.Errorf("store: claim: %w: no replica id", model.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	claimed, err := s.claim(ctx, term, replica)
	if err != nil {
		return fmt.Errorf("store: claim term %d: %w", term, err)
	}
	if !claimed {
		cur, holder, err := s.readFence(ctx)
		if err != nil {
			return fmt.Errorf("store: claim term %d refused: %w", term, err)
		}
		return fmt.Errorf("store: claim of term %d by replica %q: %w: the fence is at term %d of replica %q",
			term, replica, ErrFenced, cur, holder)
	}
	s.fence.on.Store(true)
	s.fence.claimed.Store(&writer{term: term, replica: replica})
	s.log.Info("claimed the writer's fence", "term", term, "replica", replica)
	return nil
}

// claim updates the fence on a connection of its own and ends the
// sessions that block it for longer than the claim wait.
func (s *Postgres) claim(ctx context.Context, term uint64, replica string) (bool, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	var pid int32
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return false, err
	}
	type result struct {
		claimed bool
		err     error
	}
	done := make(chan result, 1)
	go func() { // waited for below: the loop ends only with its result
		tag, err := conn.Exec(ctx, `UPDATE fence SET term = $1, replica = $2, claimed = now()
			WHERE id = 1 AND (term < $1 OR (term = $1 AND replica = $2))`, int64(term), replica)
		done <- result{tag.RowsAffected() == 1, err}
	}()
	t := time.NewTicker(s.fence.wait)
	defer t.Stop()
	for {
		select {
		case r := <-done:
			return r.claimed, r.err
		case <-t.C:
			s.endBlockers(ctx, pid, term)
		}
	}
}

// endBlockers ends the sessions that block the claiming session pid.
func (s *Postgres) endBlockers(ctx context.Context, pid int32, term uint64) {
	rows, err := s.pool.Query(ctx, `SELECT b, pg_terminate_backend(b) FROM unnest(pg_blocking_pids($1)) AS b`, pid)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("claim: cannot end the sessions holding the fence", "term", term, "err", err)
		}
		return
	}
	var (
		blocker int32
		ended   bool
	)
	_, err = pgx.ForEachRow(rows, []any{&blocker, &ended}, func() error {
		if ended {
			s.fence.ended.Add(1)
		}
		s.log.Warn("claim: ended a session holding the fence past the claim wait",
			"term", term, "pid", blocker, "ended", ended, "wait", s.fence.wait)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("claim: cannot end the sessions holding the fence", "term", term, "err", err)
	}
}

// Fence reads the fence: the term and replica of the writer that last
// claimed the database (0 and "" if none has).
func (s *Postgres) Fence(ctx context.Context) (term uint64, replica string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	term, replica, err = s.readFence(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("store: read fence: %w", err)
	}
	return term, replica, nil
}

func (s *Postgres) readFence(ctx context.Context) (uint64, string, error) {
	return readFence(ctx, s.pool)
}

func readFence(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) (uint64, string, error) {
	var (
		term    int64
		replica string
	)
	if err := q.QueryRow(ctx, `SELECT term, replica FROM fence WHERE id = 1`).Scan(&term, &replica); err != nil {
		return 0, "", err
	}
	return uint64(term), replica, nil
}

// writer returns the term and replica a write of this store must find in
// the fence, nil for an unfenced store, or why the store may not write
// at all.
func (s *Postgres) writer() (*writer, error) {
	if s.readOnly {
		return nil, ErrReadOnly
	}
	if !s.fence.on.Load() {
		return nil, nil
	}
	w := s.fence.claimed.Load()
	if w == nil {
		s.fence.refused.Add(1)
		return nil, fmt.Errorf("%w: this store has not claimed the fence", ErrFenced)
	}
	return w, nil
}

// check scans the fence row a write read (sqlFence) and fails with
// ErrFenced unless it names w: the caller then rolls back.
func (s *Postgres) check(w *writer, row pgx.Row) error {
	var (
		term    int64
		replica string
	)
	if err := row.Scan(&term, &replica); err != nil {
		return fmt.Errorf("read fence: %w", err)
	}
	if uint64(term) != w.term || replica != w.replica {
		s.fence.refused.Add(1)
		return fmt.Errorf("%w: the writer is term %d of replica %q, not term %d of replica %q",
			ErrFenced, term, replica, w.term, w.replica)
	}
	return nil
}

// checkFence checks the fence in tx, for a write of this store that is
// not a pipelined batch; a no-op for an unfenced store.
func (s *Postgres) checkFence(ctx context.Context, tx pgx.Tx) error {
	w, err := s.writer()
	if err != nil || w == nil {
		return err
	}
	return s.check(w, tx.QueryRow(ctx, sqlFence))
}

// refuseClaimed fails the open of an unfenced writer on a database a
// cluster has claimed.
func refuseClaimed(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) error {
	term, replica, err := readFence(ctx, q)
	if err != nil {
		return fmt.Errorf("read fence: %w", err)
	}
	if term > 0 {
		return fmt.Errorf("%w: the database is claimed by term %d of cluster replica %q; "+
			"open it fenced (as a replica of that cluster) or read-only, or release the fence (docs/operations.md)",
			ErrFenced, term, replica)
	}
	return nil
}
