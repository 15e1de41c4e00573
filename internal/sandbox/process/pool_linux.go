//go:build linux

package process

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"
)

// poolMemoryMB is the memory limit of a pooled init's cgroup until Start
// resizes it to its function's: the waiting init holds a few MB.
const poolMemoryMB = 128

// pool keeps up to size inits pre-forked: in their namespaces, attached to
// their cgroups, their Runtime API listener open, waiting for their
// configuration (see runInit). On cgroup v1 attaching a process to its
// cgroups costs ~10 ms of RCU grace periods, paid here instead of in Start.
//
// One goroutine refills the pool, one init at a time, never holding more
// than size starting and ready. An init that dies while it waits is removed
// and replaced (after a growing pause when that keeps happening).
type pool struct {
	d    *Driver
	size int

	mu       sync.Mutex
	ready    []*pooled
	failures int           // consecutive spawn errors and deaths; reset by a take
	closed   bool          // no more refills
	lastTake time.Time     // when an init was last taken (refillDelay)
	changed  chan struct{} // closed and replaced whenever ready changes
	wake     chan struct{} // 1-buffered: wakes the refill loop
	quit     chan struct{} // closed to stop the refill loop
	stopped  chan struct{} // closed when the refill loop returned
}

type pooled struct {
	inst  *Instance
	taken chan struct{} // closed when take removed it from the pool
}

func newPool(d *Driver, size int) *pool {
	p := &pool{
		d:       d,
		size:    size,
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go p.run()
	return p
}

// poke wakes the refill loop without blocking.
func (p *pool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// notify tells waitFull that ready changed; the caller holds p.mu.
func (p *pool) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// backoff is the pause before the next spawn after n consecutive failures.
func backoff(n int) time.Duration {
	if n == 0 {
		return 0
	}
	return min(50*time.Millisecond<<min(n-1, 10), 5*time.Second)
}

// refillDelay is how long the pool waits after a take before forking the
// replacement. On cgroup v1, attaching a process to its cgroups holds the
// kernel's threadgroup rwsem for writing, which stalls every fork and
// thread creation on the host for milliseconds, so a refill right after a
// take would slow down the very instance that was just started (its
// runtime creating its threads).
const refillDelay = 50 * time.Millisecond

func (p *pool) run() {
	defer close(p.stopped)
	for {
		p.mu.Lock()
		need := !p.closed && len(p.ready) < p.size
		delay := max(backoff(p.failures), time.Until(p.lastTake.Add(refillDelay)))
		p.mu.Unlock()
		if !need {
			select {
			case <-p.wake:
				continue
			case <-p.quit:
				return
			}
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-p.quit:
				return
			}
		}
		inst, err := p.d.spawn(poolMemoryMB)
		p.mu.Lock()
		if err != nil {
			p.failures++
			p.mu.Unlock()
			p.d.log.Warn("cannot pre-fork a sandbox init", "err", err)
			continue
		}
		if p.closed {
			p.mu.Unlock()
			inst.Stop()
			return
		}
		e := &pooled{inst: inst, taken: make(chan struct{})}
		p.ready = append(p.ready, e)
		p.notify()
		p.mu.Unlock()
		go p.watch(e)
	}
}

// watch replaces a pooled init that dies before it is taken.
func (p *pool) watch(e *pooled) {
	select {
	case <-e.taken:
		return
	case <-e.inst.done:
	}
	p.mu.Lock()
	n := slices.Index(p.ready, e)
	if n >= 0 {
		p.ready = slices.Delete(p.ready, n, n+1)
		p.failures++
		p.notify()
	}
	p.mu.Unlock()
	if n < 0 {
		return // taken (or the pool closed) meanwhile; the taker handles it
	}
	msg, _ := io.ReadAll(e.inst.errR)
	p.d.log.Warn("pre-forked sandbox init died; replacing it", "status", e.inst.ExitStatus().String(), "err", string(msg))
	_ = e.inst.Stop()
	p.poke()
}

// take removes a ready init from the pool, or returns nil when none is
// ready (a nil pool has none). The pool then refills in the background.
func (p *pool) take() *Instance {
	if p == nil {
		return nil
	}
	defer p.poke()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastTake = time.Now()
	for len(p.ready) > 0 {
		// The oldest first: the most likely to have finished its set-up.
		e := p.ready[0]
		p.ready = slices.Delete(p.ready, 0, 1)
		p.notify()
		close(e.taken)
		if e.inst.exited() {
			go e.inst.Stop()
			continue
		}
		p.failures = 0
		return e.inst
	}
	return nil
}

// waitFull returns once the pool holds size ready inits, or ctx is done.
// For tests and benchmarks.
func (p *pool) waitFull(ctx context.Context) error {
	if p == nil {
		return errors.New("no pool")
	}
	for {
		p.mu.Lock()
		full, ch := len(p.ready) >= p.size, p.changed
		p.mu.Unlock()
		if full {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close stops the refill loop and every pooled init.
func (p *pool) close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.quit)
	<-p.stopped
	p.mu.Lock()
	ready := p.ready
	p.ready = nil
	p.notify()
	for _, e := range ready {
		close(e.taken)
	}
	p.mu.Unlock()
	var errs []error
	for _, e := range ready {
		if err := e.inst.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
