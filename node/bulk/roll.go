package bulk

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/jobs"
)

// The rollout step of the work loop: each round, on a part expanded and
// neither cancelled nor held,
//
//  1. max_failures: failures since the last resume (or retry) beyond the
//     limit, once min_finished devices finished since then, hold the part;
//  2. waves: the open wave's success (success_threshold of its size, or
//     every device final without one) opens the next, or holds the part
//     for approval; a wave all final below its threshold holds the part;
//  3. dispatch: device jobs for the open waves' devices that have none
//     (and, after a retry, for the devices whose latest attempt failed
//     or expired), within max_concurrency and the rate.

// AttemptJobID is the id of bulk job bulk's job for device in attempt
// (0: the first; n: the n-th retry of the failed). A bulk job's id has a
// fixed length, so ids of different attempts and devices never meet.
func AttemptJobID(bulk, device string, attempt int) string {
	if attempt == 0 {
		return jobs.BulkJobID(bulk, device)
	}
	return bulk + "r" + strconv.Itoa(attempt) + jobs.BulkJobID("", device)
}

// memberState is a member's latest job: its attempt and state ("" and
// attempt -1: no job yet). With a health gate, a job succeeded reads
// verifying until its gate is decided, then succeeded or failed.
type memberState struct {
	attempt int
	state   apitypes.JobState
}

// verifying is the state of a member whose device job succeeded and
// whose health gate is not decided yet (not a job's state: a part's
// view of it).
const verifying apitypes.JobState = "verifying"

// memberStates are the states of part's members, and whether each was
// refused (counted among the refusals, not here).
func (s *Service) memberStates(part *Part) []memberState {
	refused := make(map[model.Path]bool, len(part.Refused))
	for _, r := range part.Refused {
		refused[r.Path] = true
	}
	out := make([]memberState, len(part.Members))
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.firstIDs[part.ID]
	if len(first) != len(part.Members) {
		first = make([]string, len(part.Members))
		for i, m := range part.Members {
			first[i] = AttemptJobID(part.ID, m.Device, 0)
		}
		s.firstIDs[part.ID] = first
	}
	dj := s.devJob[part.ID]
	gated := gateOf(part) != nil
	for i, m := range part.Members {
		out[i] = memberState{attempt: -1}
		if refused[m.Path] {
			out[i].attempt = -2
			continue
		}
		for a := part.Attempt; a >= 0; a-- {
			jid := first[i]
			if a > 0 {
				jid = AttemptJobID(part.ID, m.Device, a)
			}
			if st, ok := dj[jid]; ok {
				if gated && st == jobs.Succeeded {
					switch why, ok := part.Gates[jid]; {
					case !ok:
						st = verifying
					case why != "":
						st = jobs.Failed
					}
				}
				out[i] = memberState{attempt: a, state: st}
				break
			}
		}
	}
	return out
}

// countMembers counts members [lo, hi) of ms.
func countMembers(ms []memberState, lo, hi int) apitypes.BulkCounters {
	var c apitypes.BulkCounters
	for _, m := range ms[lo:hi] {
		switch m.attempt {
		case -2:
		case -1:
			c.Total++
			c.Pending++
		default:
			if m.state == verifying {
				c.Total++
				c.Verifying++
				continue
			}
			c.Count(m.state)
		}
	}
	return c
}

func failures(c apitypes.BulkCounters) int { return c.Failed + c.Expired }

// roll takes part one round through its rollout.
func (s *Service) roll(ctx context.Context, part *Part) error {
	r, _ := ParseRollout(part.Rollout) // checked when the part was made
	ms := s.memberStates(part)
	all := countMembers(ms, 0, len(ms))
	all.Failed += len(part.Refused)
	if part.Rebase {
		_, err := s.update(ctx, part.ID, change{Base: &Base{Failed: failures(all), Finished: all.Finished()}, At: part.Gen})
		return err
	}
	if part.Held() {
		return nil
	}
	if why := r.tripped(max(0, failures(all)-part.Base.Failed), max(0, all.Finished()-part.Base.Finished)); why != "" {
		return s.trip(ctx, part, why, 0, "max_failures")
	}
	bounds := r.Bounds(len(ms))
	if w := part.Wave; w < len(bounds)-1 {
		lo := 0
		if w > 0 {
			lo = bounds[w-1]
		}
		c := countMembers(ms, lo, bounds[w])
		size := bounds[w] - lo
		open := false
		switch {
		case r.SuccessThreshold != nil:
			need := min(size, r.SuccessThreshold.Of(size))
			if c.Succeeded >= need {
				open = true
			} else if c.Finished() == c.Total && c.Pending == 0 {
				why := fmt.Sprintf("wave %d: %d of %d devices succeeded, below success_threshold %s", w+1, c.Succeeded, size, r.SuccessThreshold)
				return s.trip(ctx, part, why, 0, "success_threshold")
			}
		default:
			open = c.Pending == 0 && c.Finished() == c.Total
		}
		if open {
			if r.Approval {
				return s.trip(ctx, part, fmt.Sprintf("wave %d waits for approval (resume)", w+2), w+2, "approval")
			}
			if _, err := s.update(ctx, part.ID, change{Wave: w + 1}); err != nil {
				return err
			}
			s.wavesOpened.Inc()
			s.log.Info("bulk job: wave opened", "bulk", part.ID, "wave", w+2)
			s.wake()
			return nil
		}
	}
	return s.dispatchOpen(ctx, part, r, ms, bounds, all)
}

// trip holds part for reason why (approve: the wave waiting for approval
// + 1), counted under metric reason.
func (s *Service) trip(ctx context.Context, part *Part, why string, approve int, reason string) error {
	next, err := s.update(ctx, part.ID, change{Trip: why, Approve: approve, At: part.Gen})
	if err != nil {
		return err
	}
	if next.Tripped == why {
		s.paused.WithLabelValues(reason).Inc()
		s.log.Warn("bulk job paused here", "bulk", part.ID, "reason", why)
	}
	return nil
}

// dispatchOpen makes the device jobs due in the open waves, within the
// concurrency and the rate.
func (s *Service) dispatchOpen(ctx context.Context, part *Part, r Rollout, ms []memberState, bounds []int, all apitypes.BulkCounters) error {
	// Without a max_concurrency, at most DefaultInFlight device jobs
	// await their devices at once here: a node takes in its devices'
	// answers as fast as it can store them, and a larger job waits in
	// its part (pending) rather than in the store's queue, where answers
	// would time out and their devices be sent them again.
	budget := max(0, DefaultInFlight-(all.Queued+all.Delivered+all.Running))
	if r.MaxConcurrency > 0 {
		budget = max(0, r.MaxConcurrency-(all.Queued+all.Delivered+all.Running+all.Verifying))
	}
	if r.Rate != nil {
		budget = min(budget, s.paceBudget(part.ID, r.Rate.At(all.Succeeded)))
	}
	if budget == 0 {
		return nil
	}
	pr := principal(part)
	made := 0
	end := bounds[min(part.Wave, len(bounds)-1)]
	var due []Member
	var attempts []int
	flush := func() error {
		err := s.dispatchMany(ctx, part, pr, due, attempts)
		due, attempts = due[:0], attempts[:0]
		return err
	}
	for i := 0; i < end && made < budget; i++ {
		m := ms[i]
		attempt := -1
		switch {
		case m.attempt == -1:
			attempt = 0
		case retryOf(part, m):
			attempt = part.Attempt
		}
		if attempt < 0 {
			continue
		}
		due = append(due, part.Members[i])
		attempts = append(attempts, attempt)
		made++
		if len(due) == dispatchBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	s.spend(part.ID, made)
	return nil
}

// DefaultInFlight bounds the device jobs of a part not final at once on
// a node when its rollout sets no max_concurrency.
const DefaultInFlight = 2000

// dispatchBatch bounds the device jobs made in one commit.
const dispatchBatch = 512

// retryOf reports whether member state m is due for part's latest
// attempt: its latest job failed or expired in an earlier one.
func retryOf(part *Part, m memberState) bool {
	return m.attempt >= 0 && m.attempt < part.Attempt && (m.state == jobs.Failed || m.state == jobs.Expired)
}

// pace is a part's dispatch rate's bucket.
type pace struct {
	tokens float64
	last   time.Time
}

// paceBudget is how many device jobs part id may make now at rate a
// second (at least one a round is allowed to accumulate).
func (s *Service) paceBudget(id string, rate float64) int {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pace[id]
	if p == nil {
		p = &pace{tokens: 1, last: now}
		s.pace[id] = p
	}
	p.tokens = math.Min(p.tokens+rate*now.Sub(p.last).Seconds(), math.Max(rate, 1))
	p.last = now
	return int(p.tokens)
}

func (s *Service) spend(id string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pace[id]; p != nil {
		p.tokens = math.Max(0, p.tokens-float64(n))
	}
}

// waves are part's own waves over ms.
func waves(part *Part, ms []memberState) []apitypes.BulkWave {
	r, _ := ParseRollout(part.Rollout)
	bounds := r.Bounds(len(ms))
	out := make([]apitypes.BulkWave, len(bounds))
	lo := 0
	for i, hi := range bounds {
		c := countMembers(ms, lo, hi)
		st := apitypes.BulkRunning
		switch {
		case part.Cancelled:
			st = apitypes.BulkCancelled
		case i > part.Wave:
			st = apitypes.BulkPending
		case c.Pending == 0 && c.Finished() == c.Total:
			st = apitypes.BulkDone
		case part.Held():
			st = apitypes.BulkPaused
		}
		out[i] = apitypes.BulkWave{Size: c.Total, State: st, Counters: c}
		lo = hi
	}
	return out
}

// Pause holds bulk job id here and below: no new device jobs are made
// until it is resumed (those made run on).
func (s *Service) Pause(ctx context.Context, id, by string) (*Part, error) {
	return s.control(ctx, id, change{Pause: "paused by " + by}, "operator")
}

// Resume lifts every hold of bulk job id here and below: the operator's,
// a threshold's (max_failures counts afresh), a wave's awaiting approval.
func (s *Service) Resume(ctx context.Context, id, by string) (*Part, error) {
	return s.control(ctx, id, change{Resume: true}, "")
}

// Retry runs the failed and expired devices of bulk job id again, here
// and below, as new device jobs (AttemptJobID): each attempt runs at
// most once on a device.
func (s *Service) Retry(ctx context.Context, id, by string) (*Part, error) {
	if part, err := s.Get(id); err == nil && !s.clock().Before(part.Deadline) {
		return nil, fmt.Errorf("%w: bulk job %s is past its deadline: issue a new one", model.ErrConflict, id)
	}
	return s.control(ctx, id, change{Retry: true}, "")
}

func (s *Service) control(ctx context.Context, id string, c change, metric string) (*Part, error) {
	if !IsID(id) {
		return nil, fmt.Errorf("%w: bulk job %q", model.ErrNotFound, id)
	}
	out, err := s.update(ctx, id, c)
	if err != nil {
		return nil, err
	}
	if metric != "" {
		s.paused.WithLabelValues(metric).Inc()
	}
	s.log.Info("bulk job control", "bulk", id, "paused", out.Paused, "attempt", out.Attempt, "gen", out.Gen)
	s.wake()
	return out, nil
}

// sendControl sends part's Control to each link that took the job and
// not its latest Control.
func (s *Service) sendControl(ctx context.Context, part *Part) error {
	if s.cfg.Links == nil || part.Gen == 0 {
		return nil
	}
	for _, name := range sortedKeys(part.Links) {
		l := part.Links[name]
		if !l.Sent || l.Error != "" || l.Ctl >= part.Gen {
			continue
		}
		ctl := &Control{Gen: part.Gen, Paused: part.Paused, Attempt: part.Attempt}
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		err := s.cfg.Links.Send(sctx, name, identity(part), Request{Action: ActionControl, Spec: Spec{ID: part.ID}, Control: ctl})
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
			continue
		default:
			s.log.Warn("bulk job: provider refused a control", "bulk", part.ID, "provider", name, "err", err)
		}
		if _, err := s.update(ctx, part.ID, change{Link: name, Ctl: part.Gen}); err != nil {
			return err
		}
	}
	return nil
}
