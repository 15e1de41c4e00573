package worker

import (
	"context"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
)

// kickReaper asks the reaper for a pass now.
func (w *Worker) kickReaper() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// reap applies the keep-alive policy and keeps provisioned concurrency:
// it stops idle instances whose windows closed, pre-warms functions whose
// windows open, and starts missing provisioned instances.
func (w *Worker) reap() {
	defer close(w.reaped)
	t := time.NewTicker(max(min(w.KeepAlive/4, time.Second), 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		case <-w.kick:
		}
		w.reapOnce(time.Now())
	}
}

func (w *Worker) reapOnce(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing {
		return
	}
	for _, st := range w.fns {
		p := st.pool
		if p == nil {
			continue
		}
		kept := p.idle[:0]
		for _, inst := range p.idle {
			select {
			case <-inst.sb.Done(): // died while idle (a provisioned one is replaced below)
				w.dropLocked(inst)
				continue
			default:
			}
			if !inst.provisioned && !inst.windows.Loaded(now.Sub(inst.idleSince)) {
				w.dropLocked(inst)
				go inst.sb.Stop()
				continue
			}
			kept = append(kept, inst)
		}
		clear(p.idle[len(kept):])
		p.idle = kept

		if st.fn == nil {
			continue
		}
		// Pre-warm: the function is idle with nothing loaded and its
		// windows say it should be.
		if st.inFlight == 0 && st.instances == 0 && !st.prewarming && st.windows.PrewarmAfter > 0 &&
			!st.lastEnd.IsZero() && st.windows.Loaded(now.Sub(st.lastEnd)) {
			st.prewarming = true
			go w.startWarm(st.fn, false)
		}
		for missing := st.fn.ProvisionedConcurrency - p.provisioned - st.provStarting; missing > 0; missing-- {
			st.provStarting++
			go w.startWarm(st.fn, true)
		}
	}
}

// startWarm starts an instance ahead of need and leaves it idle once its
// runtime is initialised: a provisioned-concurrency instance, or a
// pre-warm decided by the keep-alive policy.
func (w *Worker) startWarm(fn *model.Function, provisioned bool) {
	rev := revisionOf(fn)
	w.mu.Lock()
	st := w.stateLocked(fn)
	done := func() {
		if provisioned {
			st.provStarting--
		} else {
			st.prewarming = false
		}
	}
	if w.closing || !w.admitLocked(st, fn.Memory).Start {
		done() // no room now; a later pass tries again
		w.mu.Unlock()
		return
	}
	w.reserveLocked(st, fn.Memory)
	p := st.pool
	p.starting++
	w.mu.Unlock()

	inst, err := w.startInstance(context.Background(), fn, rev)
	ready := false
	if err == nil {
		inst.st, inst.provisioned = st, provisioned
		t := time.NewTimer(w.InitTimeout)
		select {
		case <-inst.api.Ready():
			inst.initDur = time.Since(inst.started)
			ready = true
		case <-inst.api.InitFailed():
		case <-inst.sb.Done():
		case <-t.C:
		}
		t.Stop()
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	p.starting--
	done()
	if err != nil {
		st.instances--
		st.usedMB -= fn.Memory
		w.notifyLocked()
		w.Logger.Warn("cannot start a warm instance", "function", fn.Name, "provisioned", provisioned, "err", err)
		return
	}
	if !ready || w.closing || st.pool != p {
		w.dropLocked(inst)
		go inst.sb.Stop()
		if !ready {
			w.Logger.Warn("a warm instance failed to initialise", "function", fn.Name, "provisioned", provisioned)
		}
		return
	}
	now := time.Now()
	inst.lastUsed, inst.idleSince, inst.windows = now, st.lastEnd, st.windows
	if provisioned {
		p.provisioned++
	}
	p.idle = append(p.idle, inst)
	w.notifyLocked()
}
