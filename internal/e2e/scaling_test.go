package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
)

func intp(i int) *int { return &i }

// invokeAll runs n invocations at once and returns their responses.
func (h *harness) invokeAll(name, payload string, n int) []response {
	h.t.Helper()
	out := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = h.invoke(name, payload)
		}()
	}
	wg.Wait()
	return out
}

func (h *harness) counts(name string) string {
	fn, err := h.client.Get(context.Background(), name)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("warm=%d busy=%d", fn.Instances.Warm, fn.Instances.Busy)
}

func statuses(rs []response) map[int]int {
	m := map[int]int{}
	for _, r := range rs {
		m[r.status]++
	}
	return m
}

// TestReservedConcurrency checks the cap (excess waits, then is throttled
// with Lambda's 429 and Reason) and that 0 disables the function.
func TestReservedConcurrency(t *testing.T) {
	h := startNode(t, node.Config{QueueTimeout: 200 * time.Millisecond})
	h.deployGoecho(model.Config{Name: "capped", ReservedConcurrency: intp(1)})
	rs := h.invokeAll("capped", `{"action":"sleep","ms":1000}`, 2)
	if got := statuses(rs); got[200] != 1 || got[429] != 1 {
		t.Fatalf("two concurrent invocations with reserved_concurrency 1: statuses %v, want one 200 and one 429", got)
	}
	for _, r := range rs {
		if r.status == 429 {
			checkAPIError(t, r, 429, "TooManyRequestsException", "Rate Exceeded")
			if !strings.Contains(string(r.body), `"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"`) {
				t.Errorf("429 body %s, want Reason ReservedFunctionConcurrentInvocationLimitExceeded", r.body)
			}
		}
	}
	// Within the queue timeout, the excess waits for the busy instance.
	h.deployGoecho(model.Config{Name: "queued", ReservedConcurrency: intp(1)})
	if got := statuses(h.invokeAll("queued", `{"action":"sleep","ms":50}`, 3)); got[200] != 3 {
		t.Errorf("three short invocations with reserved_concurrency 1: statuses %v, want all 200 (queued)", got)
	}
	if c := h.counts("queued"); c != "warm=1 busy=0" {
		t.Errorf("instances of queued: %s, want warm=1 busy=0 (never more than the cap)", c)
	}

	h.deployGoecho(model.Config{Name: "off", ReservedConcurrency: intp(0)})
	start := time.Now()
	checkAPIError(t, h.invoke("off", `{}`), 429, "TooManyRequestsException", "Rate Exceeded")
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("reserved_concurrency 0 took %v to refuse, want at once", d)
	}
	eventually(t, 5*time.Second, func() string {
		u, err := h.client.Usage(context.Background(), "")
		if err != nil {
			return err.Error()
		}
		if u.Total.Throttles < 2 {
			return fmt.Sprintf("throttles = %d, want at least 2", u.Total.Throttles)
		}
		return ""
	})
}

// TestProvisionedConcurrency checks that provisioned instances exist before
// the first invoke, serve it warm, and are replaced when they die.
func TestProvisionedConcurrency(t *testing.T) {
	h := startNode(t, node.Config{})
	h.deployGoecho(model.Config{Name: "prov", ProvisionedConcurrency: 2})
	eventually(t, 10*time.Second, func() string {
		fn, err := h.client.Get(context.Background(), "prov")
		if err != nil {
			return err.Error()
		}
		if fn.Instances.Warm != 2 {
			return fmt.Sprintf("warm instances %d, want 2 provisioned before any invoke", fn.Instances.Warm)
		}
		return ""
	})
	r := h.invoke("prov", `{}`, "X-Amz-Log-Type", "Tail")
	tail, _ := decodeTail(r)
	if r.status != 200 || strings.Contains(tail, "Init Duration") {
		t.Errorf("first invoke: status %d, log tail %q; want a warm start (no Init Duration)", r.status, tail)
	}
	// A provisioned instance that crashes is replaced.
	h.invokeErr("prov", `{"action":"crash"}`)
	eventually(t, 10*time.Second, func() string {
		if c := h.counts("prov"); c != "warm=2 busy=0" {
			return "instances " + c + ", want warm=2 busy=0 after the crashed one was replaced"
		}
		return ""
	})
	h.waitUsage("prov", func(u cli.UsageRow) string {
		if u.ColdStarts != 0 || u.Invocations != 2 || u.Provisioned != 2 {
			return fmt.Sprintf("usage %+v, want 2 invocations on provisioned instances, no cold start", u)
		}
		return ""
	})
}

// TestMemoryBudget checks eviction of idle instances (least recently used
// first) and the 429 when nothing can be evicted.
func TestMemoryBudget(t *testing.T) {
	h := startNode(t, node.Config{MemoryMB: 256, QueueTimeout: 300 * time.Millisecond})
	for _, name := range []string{"a", "b", "c"} {
		h.deployGoecho(model.Config{Name: name})
	}
	h.invokeOK("a", `{}`)
	h.invokeOK("b", `{}`)
	h.invokeOK("c", `{}`) // the budget holds two: a, the least recently used, goes
	want := map[string]string{"a": "warm=0 busy=0", "b": "warm=1 busy=0", "c": "warm=1 busy=0"}
	eventually(t, 5*time.Second, func() string {
		for name, w := range want {
			if got := h.counts(name); got != w {
				return fmt.Sprintf("%s: %s, want %s", name, got, w)
			}
		}
		return ""
	})
	// Two busy instances fill the budget: a third invocation cannot evict
	// anything, waits, and is throttled.
	var wg sync.WaitGroup
	wg.Add(2)
	for _, name := range []string{"b", "c"} {
		go func() {
			defer wg.Done()
			h.invoke(name, `{"action":"sleep","ms":1500}`)
		}()
	}
	time.Sleep(200 * time.Millisecond)
	r := h.invoke("a", `{}`)
	wg.Wait()
	checkAPIError(t, r, 429, "TooManyRequestsException", "Rate Exceeded")
	if !strings.Contains(string(r.body), "ConcurrentInvocationLimitExceeded") {
		t.Errorf("429 body %s, want Reason ConcurrentInvocationLimitExceeded", r.body)
	}
	h.invokeOK("a", `{}`) // once they are idle, a evicts one of them
}

// TestBurstAndScaleToZero sends a burst at a function with no instance:
// every request is served; idle instances then stop after the keep-alive
// and the next request is a cold start again.
func TestBurstAndScaleToZero(t *testing.T) {
	h := startNode(t, node.Config{KeepAlive: 500 * time.Millisecond})
	h.deployGoecho(model.Config{Name: "burst"})
	if got := statuses(h.invokeAll("burst", `{"action":"sleep","ms":100}`, 30)); got[200] != 30 {
		t.Fatalf("burst of 30: statuses %v, want all 200", got)
	}
	eventually(t, 5*time.Second, func() string {
		if c := h.counts("burst"); c != "warm=0 busy=0" {
			return "instances " + c + " after the keep-alive, want none (scaled to zero)"
		}
		return ""
	})
	r := h.invoke("burst", `{}`, "X-Amz-Log-Type", "Tail")
	if tail, _ := decodeTail(r); !strings.Contains(tail, "Init Duration") {
		t.Errorf("invoke after scale to zero: log tail %q, want a cold start with Init Duration", tail)
	}
	u, _ := h.client.Usage(context.Background(), "burst")
	if u.Total.ColdStarts < 2 {
		t.Errorf("cold starts %d, want the burst's and the one after scale to zero", u.Total.ColdStarts)
	}
}
