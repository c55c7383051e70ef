package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/strata-dm/strata/model"
)

// write proposes change c of job id (update.go), with the job event ev
// on path in the same commit (none when ev is nil or path empty; when
// path is gone, the record alone), and returns the record as written and
// its log sequence number.
func (s *Service) write(ctx context.Context, id string, c change, path model.Path, evs []*JobEvent, bulk *bulkFailure) (*Job, uint64, error) {
	arg, err := json.Marshal(c)
	if err != nil {
		return nil, 0, err
	}
	return s.commit(ctx, model.Mutation{Op: model.OpUpdateRecord, Record: &model.Record{Kind: KindJob, Key: id, Value: arg}}, path, evs, bulk)
}

// bulkFailure is the bulk.failure event of a move, on its bulk job's
// context.
type bulkFailure struct {
	bulk string
	ev   BulkFailureEvent
}

// commit commits rec, a mutation of job record, with the job event ev on
// path (see write), and returns the record as logged.
func (s *Service) commit(ctx context.Context, rec model.Mutation, path model.Path, evs []*JobEvent, bf *bulkFailure) (*Job, uint64, error) {
	id := rec.Record.Key
	muts := []model.Mutation{rec}
	var bulkEv []model.Mutation
	if bf != nil {
		payload, _ := json.Marshal(bf.ev)
		bulkEv = []model.Mutation{{Op: model.OpEvent, Path: BulkPath(bf.bulk),
			Event: &model.Event{Name: BulkFailureEventName, Level: model.LevelWarning, Payload: payload}}}
		muts = append(muts, bulkEv...)
	}
	for _, ev := range evs {
		if ev != nil && path != "" {
			muts = append(muts, jobEvent(path, ev))
		}
	}
	es, err := s.rec.Apply(ctx, muts...)
	if err != nil && len(muts) > 1 && errors.Is(err, model.ErrNotFound) {
		// The device's context may be gone: keep the job's record anyway
		// (a missing job fails again, alone), with its bulk failure.
		es, err = s.rec.Apply(ctx, append([]model.Mutation{muts[0]}, bulkEv...)...)
		if err != nil && len(bulkEv) > 0 && errors.Is(err, model.ErrNotFound) {
			es, err = s.rec.Apply(ctx, muts[0])
		}
	}
	if err != nil {
		if errors.Is(err, model.ErrConflict) || errors.Is(err, model.ErrNotFound) {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("jobs: store %s: %w", id, err)
	}
	if len(es) == 0 || es[0].Mutation.Record == nil {
		return nil, 0, fmt.Errorf("jobs: store %s: no record logged", id)
	}
	j := new(Job)
	if err := json.Unmarshal(es[0].Mutation.Record.Value, j); err != nil {
		return nil, 0, fmt.Errorf("jobs: store %s: %w", id, err)
	}
	return j, es[0].Seq, nil
}

// jobEvent is the mutation recording job event ev on path.
func jobEvent(path model.Path, ev *JobEvent) model.Mutation {
	level := model.LevelInfo
	if ev.State == Failed || ev.State == Expired {
		level = model.LevelWarning
	}
	payload, _ := json.Marshal(ev)
	return model.Mutation{Op: model.OpEvent, Path: path, Event: &model.Event{Name: EventName, Level: level, Payload: payload}}
}

// move proposes moving job base (this replica's view of it, maybe out
// of date) to state to; the log decides against the job as it has it
// (Update): model.ErrConflict when the job is no longer in a state that
// allows it. On success the job in memory is the one written, which it
// returns. The caller holds the job's stripe (jobLock), not s.mu.
//
// A device job of a bulk job records no job event on its device's
// context: its part counts it (node/bulk), and a failure is a bulk
// failure event, so a job of many devices costs the change log, and each
// federation link above, no entry per device.
func (s *Service) move(ctx context.Context, base *Job, device string, to State, detail string, result json.RawMessage, errMsg string) (Job, error) {
	c := change{Device: device, To: to, At: s.clock(), Detail: detail, Result: result, Error: errMsg}
	s.mu.Lock()
	if at, ok := s.acked[base.ID]; ok {
		if to == Delivered {
			c.At = at
		} else {
			c.DeliveredAt = &at
		}
	}
	s.mu.Unlock()
	var evs []*JobEvent
	if base.Bulk == "" {
		if c.DeliveredAt != nil {
			// The delivery, written with the answer: its event first.
			evs = append(evs, &JobEvent{Job: base.ID, Function: base.Function, State: Delivered, By: base.CreatedBy})
		}
		evs = append(evs, &JobEvent{Job: base.ID, Function: base.Function, State: to, By: base.CreatedBy, Error: truncate(errMsg, 512)})
	}
	var bf *bulkFailure
	if base.Bulk != "" && (to == Failed || to == Expired) {
		msg := errMsg
		if msg == "" {
			msg = detail
		}
		bf = &bulkFailure{bulk: base.Bulk, ev: BulkFailureEvent{Job: base.ID, Device: base.Device, Path: base.Path, State: to, Error: truncate(msg, 512)}}
	}
	j, seq, err := s.write(ctx, base.ID, c, base.Path, evs, bf)
	if err != nil {
		if errors.Is(err, model.ErrConflict) {
			s.mu.Lock()
			delete(s.acked, base.ID) // final in the log: nothing to write
			s.mu.Unlock()
		}
		return Job{}, err
	}
	s.mu.Lock()
	delete(s.acked, base.ID)
	s.written(j, seq)
	out := clone(j)
	s.mu.Unlock()
	if out.State.Final() && s.finished != nil {
		// Outside the service's lock (the job's stripe is held): it
		// may write.
		s.finished(clone(&out))
	}
	return out, nil
}

// written brings memory up to date with j, just written at seq: a job not
// final is indexed (or replaced), a final one leaves the index (waking its
// waiters; move hands it to Finished). The caller holds s.mu.
func (s *Service) written(j *Job, seq uint64) {
	if seq < s.seen[j.ID] {
		return // memory followed a later write already
	}
	cur, active := s.active[j.ID]
	if j.State.Final() {
		if active {
			s.unindex(cur)
		}
		delete(s.seen, j.ID)
		return
	}
	switch {
	case active && cur.Device == j.Device:
		*cur = *j
	case active:
		s.unindex(cur)
		s.index(j)
	default:
		s.index(j)
	}
	s.wrote(j.ID, seq)
}

// appendHistory keeps the first entry (creation) and the latest ones.
func appendHistory(h []Transition, t Transition) []Transition {
	h = append(h, t)
	if len(h) > MaxHistory {
		h = append(h[:1], h[len(h)-MaxHistory+1:]...)
	}
	return h
}

// MarkDelivered records that device acknowledged job id. It is a no-op for
// an unknown, foreign or already delivered job (also when this replica's
// view of it is behind the log).
//
// The job is delivered in memory at once (reads and counts see it), and
// written so only if no answer came within DeliveredGrace: a device
// usually answers within it, and its answer's write records the delivery
// too (Update: DeliveredAt), so a command costs the store one write fewer.
// A delivery lost in a crash meanwhile leaves the job queued: it is sent
// again, and the device, which ignores a command id it ran, answers
// again.
func (s *Service) MarkDelivered(ctx context.Context, device, id string) error {
	defer s.jobLock(id)()
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.active[id]
	if !ok || j.Device != device || j.State != Queued {
		return nil
	}
	at := s.clock()
	s.acked[id] = at
	j.State, j.Updated = Delivered, at
	j.History = appendHistory(slices.Clone(j.History), Transition{State: Delivered, Time: at})
	return nil
}

// DeliveredGrace is how long a delivery waits in memory for the job's
// answer before it is written on its own (MarkDelivered).
const DeliveredGrace = time.Second

// writeDelivered writes the deliveries acknowledged more than
// DeliveredGrace ago (all of them: every one) whose jobs have no answer
// yet.
func (s *Service) writeDelivered(all bool) {
	cutoff := s.clock().Add(-DeliveredGrace)
	var due []string
	s.mu.Lock()
	for id, at := range s.acked {
		if all || at.Before(cutoff) {
			due = append(due, id)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range due {
		// Concurrently: the writes share the store's syncs.
		wg.Go(func() {
			defer s.jobLock(id)()
			j, ok := s.activeCopy(id)
			s.mu.Lock()
			_, pending := s.acked[id]
			s.mu.Unlock()
			if !ok || !pending || j.State != Delivered {
				return
			}
			if _, err := s.move(context.Background(), &j, j.Device, Delivered, "", nil, ""); err != nil && !errors.Is(err, model.ErrConflict) {
				s.log.Warn("delivery not recorded", "job", id, "err", err)
			}
		})
	}
	wg.Wait()
}

// Report records a device's answer to job id: status running (progress),
// succeeded or failed. An answer from another device than the job's is
// refused (not found); one for a job already final is kept in its history
// only. The job's state is decided against the log, not this replica's
// view of it: an answer for a job this replica has not heard of yet, or
// has not seen finish, is applied or kept as a late answer all the same.
func (s *Service) Report(ctx context.Context, device, id string, status State, result json.RawMessage, errMsg string) error {
	switch status {
	case Running, Succeeded, Failed:
	default:
		return fmt.Errorf("%w: status must be running, succeeded or failed", model.ErrInvalid)
	}
	if len(result) > MaxResultBytes {
		return fmt.Errorf("%w: result larger than %d bytes", model.ErrInvalid, MaxResultBytes)
	}
	if len(result) > 0 {
		if err := model.CheckValue(result); err != nil {
			return fmt.Errorf("result: %w", err)
		}
	}
	if len(errMsg) > maxErrorLen {
		errMsg = errMsg[:maxErrorLen]
	}
	defer s.jobLock(id)()
	cur, active := s.activeCopy(id)
	base := &cur
	if !active {
		j, err := s.load(id)
		switch {
		case errors.Is(err, model.ErrNotFound):
			// Not applied here yet: the log decides.
			j = Job{ID: id, Device: device}
		case err != nil:
			return err
		}
		base = &j
	}
	if base.Device != device {
		return fmt.Errorf("%w: job %q", model.ErrNotFound, id)
	}
	if base.State.Final() {
		return s.lateAnswer(ctx, base, status)
	}
	if status == Running && base.State == Running {
		return nil
	}
	_, err := s.move(ctx, base, device, status, "", result, errMsg)
	switch {
	case err == nil:
		if status.Final() {
			s.log.Info("job finished", "job", id, "device", device, "state", status)
		}
		return nil
	case !errors.Is(err, model.ErrConflict):
		return err
	case status == Running:
		return nil // the job is further than running already
	}
	return s.lateAnswer(ctx, base, status)
}

// lateAnswer keeps an answer for a final job in its history only. The
// caller holds the job's stripe.
func (s *Service) lateAnswer(ctx context.Context, base *Job, status State) error {
	if status == Running {
		return nil
	}
	j, seq, err := s.write(ctx, base.ID, change{Device: base.Device, Note: status, At: s.clock()}, "", nil, nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.written(j, seq)
	s.mu.Unlock()
	return nil
}

// Cancel cancels a job that is not final; a final job is a conflict.
func (s *Service) Cancel(ctx context.Context, id, by string) (Job, error) {
	defer s.jobLock(id)()
	cur, ok := s.activeCopy(id)
	j := &cur
	if !ok {
		old, err := s.load(id)
		if err != nil {
			return Job{}, err
		}
		if old.State.Final() {
			return old, fmt.Errorf("%w: job %s is already %s", model.ErrConflict, id, old.State)
		}
		j = &old
	}
	return s.move(ctx, j, "", Cancelled, "by "+by, nil, "")
}

// Wait returns job id once it is final, or its current state when ctx ends
// first (the caller answers 202 then).
func (s *Service) Wait(ctx context.Context, id string) (Job, error) {
	s.mu.Lock()
	j, ok := s.active[id]
	if !ok {
		s.mu.Unlock()
		return s.load(id)
	}
	ch := make(chan struct{})
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		s.mu.Lock()
		s.waiters[id] = deleteChan(s.waiters[id], ch)
		if j, ok = s.active[id]; ok {
			c := clone(j)
			s.mu.Unlock()
			return c, nil
		}
		s.mu.Unlock()
	}
	return s.load(id)
}

func deleteChan(chs []chan struct{}, ch chan struct{}) []chan struct{} {
	for i, c := range chs {
		if c == ch {
			return append(chs[:i], chs[i+1:]...)
		}
	}
	return chs
}

// expireLoop expires jobs past their deadline, checking every second.
func (s *Service) expireLoop() {
	defer close(s.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	d := time.NewTicker(DeliveredGrace / 4)
	defer d.Stop()
	for {
		select {
		case <-s.stop:
			s.writeDelivered(true) // what is acknowledged is kept
			return
		case <-d.C:
			s.writeDelivered(false)
		case <-t.C:
			if s.leading == nil || s.leading() {
				s.expire()
			}
		}
	}
}

// expire moves every active job past its deadline to expired.
func (s *Service) expire() {
	now := s.clock()
	var due []Job
	s.mu.Lock()
	for _, j := range s.active {
		if !now.Before(j.Deadline) {
			due = append(due, clone(j))
		}
	}
	s.mu.Unlock()
	for _, j := range due {
		unlock := s.jobLock(j.ID)
		_, err := s.move(context.Background(), &j, "", Expired, "deadline passed", nil, "")
		unlock()
		switch {
		case errors.Is(err, model.ErrConflict):
			continue // final already: this replica has not applied it yet
		case err != nil:
			s.log.Warn("cannot expire job", "job", j.ID, "err", err)
			return
		}
		s.log.Info("job expired", "job", j.ID, "device", j.Device)
	}
}

// Prune deletes final jobs last updated before cutoff and returns how many.
func (s *Service) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	var old []string
	err := s.List(func(j Job) bool {
		if j.State.Final() && j.Updated.Before(cutoff) {
			old = append(old, j.ID)
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	for i, id := range old {
		if err := s.rec.DeleteRecord(ctx, KindJob, id); err != nil {
			return i, err
		}
	}
	return len(old), nil
}
