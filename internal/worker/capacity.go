package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/scheduler"
)

// stateLocked returns the function's state, creating it, and makes sure its
// pool is of fn's revision (retiring the idle instances of an older one).
func (w *Worker) stateLocked(fn *model.Function) *fnState {
	st := w.fns[fn.Name]
	if st == nil {
		st = &fnState{name: fn.Name}
		w.fns[fn.Name] = st
	}
	if st.fn == nil || !st.fn.LastModified.After(fn.LastModified) {
		st.fn = fn
	}
	if rev := revisionOf(fn); st.pool == nil || st.pool.revision != rev {
		if st.pool != nil {
			w.retirePoolLocked(st)
		}
		st.pool = &pool{revision: rev}
	}
	return st
}

// retirePoolLocked stops the idle instances of st's pool and forgets it;
// busy ones stop when their invocation ends (their revision no longer
// matches).
func (w *Worker) retirePoolLocked(st *fnState) {
	if st.pool == nil {
		return
	}
	for _, inst := range st.pool.idle {
		w.dropLocked(inst)
		go inst.sb.Stop()
	}
	st.pool = nil
}

// dropLocked removes inst from the accounting, once.
func (w *Worker) dropLocked(inst *instance) {
	if inst.dropped {
		return
	}
	inst.dropped = true
	st := inst.st
	st.instances--
	st.usedMB -= inst.memoryMB
	if inst.provisioned && st.pool != nil && st.pool.revision == inst.revision {
		st.pool.provisioned--
	}
	w.notifyLocked()
}

// notifyLocked wakes invocations waiting for capacity.
func (w *Worker) notifyLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// begin and end bracket an invocation for the keep-alive policy: begin
// records the idle time that ended, end decides the windows of the
// instance that became idle.
func (w *Worker) begin(fn *model.Function) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.stateLocked(fn)
	if st.inFlight == 0 && !st.lastEnd.IsZero() {
		st.hist.Record(time.Since(st.lastEnd))
	}
	st.inFlight++
}

// end finishes the invocation's bookkeeping and returns inst (nil when none
// was acquired) to its pool, or stops it when it cannot serve again or
// belongs to a retired revision.
func (w *Worker) end(name string, inst *instance, keep bool) {
	now := time.Now()
	w.mu.Lock()
	st := w.fns[name]
	if inst != nil {
		st = inst.st
	}
	var win scheduler.Windows
	if st != nil {
		st.inFlight--
		win = w.KeepAlivePolicy.Decide(&st.hist, st.inFlight)
		if st.inFlight == 0 {
			st.lastEnd, st.windows = now, win
		}
	}
	if inst == nil {
		w.mu.Unlock()
		return
	}
	p := st.pool
	if p != nil && p.revision == inst.revision {
		p.busy--
		if keep && !w.closing {
			inst.lastUsed, inst.idleSince, inst.windows = now, now, win
			p.idle = append(p.idle, inst)
			w.notifyLocked()
			w.mu.Unlock()
			if win.PrewarmAfter > 0 && !inst.provisioned {
				w.kickReaper() // the policy unloads right after the invocation
			}
			return
		}
	}
	w.dropLocked(inst)
	w.mu.Unlock()
	go inst.sb.Stop()
}

// acquire returns an idle warm instance of fn, or starts a new one when
// admission allows it, waiting up to QueueTimeout for capacity. It returns a
// *model.ThrottledError when the function cannot get an instance.
func (w *Worker) acquire(ctx context.Context, fn *model.Function) (*instance, bool, error) {
	rev := revisionOf(fn)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w.mu.Lock()
		if w.closing {
			w.mu.Unlock()
			return nil, false, model.ErrShuttingDown
		}
		st := w.stateLocked(fn)
		p := st.pool
		for len(p.idle) > 0 {
			inst := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			select {
			case <-inst.sb.Done(): // died while idle
				w.dropLocked(inst)
				continue
			default:
			}
			p.busy++
			w.mu.Unlock()
			return inst, false, nil
		}
		adm := w.admitLocked(st, fn.Memory)
		if adm.Start {
			w.reserveLocked(st, fn.Memory)
			p.starting++
			w.mu.Unlock()
			inst, err := w.startInstance(ctx, fn, rev)
			w.mu.Lock()
			p.starting--
			if err != nil {
				st.instances--
				st.usedMB -= fn.Memory
				w.notifyLocked()
			} else {
				inst.st = st
				p.busy++
			}
			w.mu.Unlock()
			return inst, true, err
		}
		ch := w.changed
		w.mu.Unlock()
		if adm.Never {
			return nil, false, &model.ThrottledError{Reason: adm.Reason}
		}
		if timer == nil {
			timer = time.NewTimer(w.QueueTimeout)
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil, false, &model.ThrottledError{Reason: adm.Reason}
		}
	}
}

// reserveLocked counts a starting instance of st.
func (w *Worker) reserveLocked(st *fnState, memoryMB int) {
	st.instances++
	st.usedMB += memoryMB
}

// admitLocked asks the scheduler whether st may start an instance of
// memoryMB, and evicts the idle instances it chose.
func (w *Worker) admitLocked(st *fnState, memoryMB int) scheduler.Admission {
	reserved := st.fn.Reserved()
	if w.MemoryMB <= 0 && reserved < 0 {
		return scheduler.Admission{Start: true}
	}
	c := scheduler.Capacity{BudgetMB: w.MemoryMB}
	if c.BudgetMB <= 0 {
		c.BudgetMB = int(^uint(0) >> 2)
	}
	var idle []scheduler.Candidate
	var owners []*instance
	for _, other := range w.fns {
		if r := other.fn.Reserved(); r >= 0 {
			c.ReservedMB += r * other.fn.Memory
			continue
		}
		c.SharedUsedMB += other.usedMB
		if other.pool == nil {
			continue
		}
		for _, inst := range other.pool.idle {
			if !inst.provisioned {
				idle = append(idle, scheduler.Candidate{MemoryMB: inst.memoryMB, LastUsed: inst.lastUsed})
				owners = append(owners, inst)
			}
		}
	}
	adm := scheduler.Admit(c, scheduler.Demand{MemoryMB: memoryMB, Reserved: reserved, Instances: st.instances}, idle)
	for _, i := range adm.Evict {
		w.evictLocked(owners[i])
	}
	return adm
}

// evictLocked stops an idle instance to free its memory.
func (w *Worker) evictLocked(inst *instance) {
	p := inst.st.pool
	for i, x := range p.idle {
		if x == inst {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			break
		}
	}
	w.Logger.Debug("evicting idle instance", "function", inst.st.name, "instance", inst.id)
	w.dropLocked(inst)
	go inst.sb.Stop()
}

// Sync tells the worker a function changed (fn nil: it was deleted): the
// idle instances of an older revision stop, and provisioned instances are
// started for the new one.
func (w *Worker) Sync(name string, fn *model.Function) {
	w.mu.Lock()
	if fn == nil {
		if st := w.fns[name]; st != nil {
			w.retirePoolLocked(st)
			delete(w.fns, name)
		}
	} else {
		w.stateLocked(fn)
	}
	w.mu.Unlock()
	w.kickReaper()
}

// CheckReservation returns an error wrapping model.ErrInvalid when fn's
// reserved concurrency, with every other function's, would not fit the
// node's memory budget.
func (w *Worker) CheckReservation(fn model.Config) error {
	r := fn.Reserved()
	if r <= 0 || w.MemoryMB <= 0 {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	total := r * fn.Memory
	for name, st := range w.fns {
		if name != fn.Name && st.fn.Reserved() > 0 {
			total += st.fn.Reserved() * st.fn.Memory
		}
	}
	if total > w.MemoryMB {
		return model.Invalidf("reserved_concurrency %d × %d MB brings the node's reservations to %d MB, over its %d MB budget (aloft up --memory)",
			r, fn.Memory, total, w.MemoryMB)
	}
	return nil
}

// Counts is how many instances a function has.
type Counts struct {
	Warm        int `json:"warm"`        // idle and ready
	Busy        int `json:"busy"`        // running an invocation or starting
	Provisioned int `json:"provisioned"` // provisioned-concurrency instances, idle or busy
}

// Instances reports the instance counts of one function.
func (w *Worker) Instances(name string) Counts {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.fns[name]
	if st == nil || st.pool == nil {
		return Counts{}
	}
	p := st.pool
	return Counts{Warm: len(p.idle), Busy: p.busy + p.starting, Provisioned: p.provisioned}
}

// Close stops taking invocations, waits for those in flight until ctx ends,
// then stops every instance.
func (w *Worker) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return nil
	}
	w.closing = true
	w.notifyLocked()
	w.mu.Unlock()
	close(w.stop)
	<-w.reaped

	drained := make(chan struct{})
	go func() { w.inflight.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
	case <-ctx.Done():
		err = fmt.Errorf("cannot drain in-flight invocations: %w", ctx.Err())
	}
	w.mu.Lock()
	for _, st := range w.fns {
		w.retirePoolLocked(st)
	}
	w.mu.Unlock()
	w.closePools()
	if cerr := w.Driver.Close(); err == nil {
		err = cerr
	}
	// Every instance is gone, so what is still in flight ends now; then the
	// recorder writes the last records.
	w.inflight.Wait()
	close(w.records)
	<-w.recorded
	return err
}
