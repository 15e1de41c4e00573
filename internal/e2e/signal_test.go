package e2e_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/sandbox/process"
)

// TestSignalDrain sends SIGTERM to `aloft up` while an invocation runs: the
// invocation still completes with 200, `aloft up` exits 0 within its grace
// period, and no instance process is left. Runs with plain processes and,
// where the host can, isolated.
func TestSignalDrain(t *testing.T) {
	modes := []string{"none", "required"}
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			if mode == "required" {
				if _, err := process.Probe(); err != nil {
					t.Skipf("process sandbox unavailable: %v", err)
				}
			}
			const grace = 30 * time.Second
			dataDir := filepath.Join(t.TempDir(), "data")
			marker := fmt.Sprintf("sigterm-%s-%d-%d", mode, os.Getpid(), time.Now().UnixNano())
			up := runUp(t, dataDir, freeAddr(t), "--isolation", mode, "--grace", grace.String())
			up.deployFiles(t, model.Config{Name: "sleeper", Runtime: model.RuntimePython, Handler: "main.handler",
				Timeout: 60, Env: map[string]string{"APP_MARKER": marker}}, map[string]string{"main.py": sleeper})
			up.invokeOK(t, "sleeper", `{}`)

			type result struct {
				status int
				body   string
				err    error
			}
			inflight := make(chan result, 1)
			go func() {
				s, b, err := up.invoke("sleeper", `{"sleep": 3}`)
				inflight <- result{s, b, err}
			}()
			waitUntil(t, 30*time.Second, "the invocation to sleep", func() bool { return len(sleepingWith(marker)) == 1 })

			if err := up.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-inflight:
				if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"slept": 3`) {
					t.Errorf("invocation in flight at SIGTERM: got %d %q (%v), want 200 with slept 3\n%s", r.status, r.body, r.err, up.out)
				}
			case <-time.After(grace):
				t.Fatalf("invocation in flight at SIGTERM did not finish within the grace period\n%s", up.out)
			}
			select {
			case <-up.done:
			case <-time.After(grace + 10*time.Second):
				t.Fatalf("aloft up still runs %s after SIGTERM\n%s", grace+10*time.Second, up.out)
			}
			if up.err != nil {
				t.Errorf("aloft up exit after SIGTERM: got %v, want exit status 0\n%s", up.err, up.out)
			}
			if !strings.Contains(up.out.String(), "draining") {
				t.Errorf("aloft up output: no drain message\n%s", up.out)
			}
			waitUntil(t, 10*time.Second, "no instance process left", func() bool { return len(processesWith(marker)) == 0 })
			if mode == "required" {
				if got := instanceCgroups(t, dataDir); len(got) != 0 {
					t.Errorf("instance cgroups after shutdown: %v", got)
				}
			}
		})
	}
}
