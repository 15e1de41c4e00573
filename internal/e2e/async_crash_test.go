package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// recordIDs is a Python function that appends each event's id to
// $APP_OUT/ids, outside the platform, so a test can count processing.
// Each line is one O_APPEND write, atomic across instances.
const recordIDs = `import os
out = os.path.join(os.environ["APP_OUT"], "ids")
def handler(event, context):
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (event["id"] + "\n").encode())
    os.close(fd)
    return {}
`

// upProcess is `aloft up` running as a child process.
type upProcess struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func startUp(t *testing.T, bin, dataDir, addr, token string) *upProcess {
	t.Helper()
	cmd := exec.Command(bin, "up", "--data", dataDir, "--listen", addr, "--isolation", "none", "--grace", "5s")
	cmd.Env = append(os.Environ(), "ALOFT_TOKEN="+token)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &upProcess{cmd: cmd, out: &out}
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("aloft up did not come up: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and reaps the process.
func (p *upProcess) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

func readIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return seen
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if id := strings.TrimSpace(sc.Text()); id != "" {
			seen[id]++
		}
	}
	return seen
}

// TestAsyncCrash accepts 10 000 async events, kills `aloft up` with
// SIGKILL while they drain, restarts it, and checks that every accepted
// event was processed at least once. It reports the duplicates.
func TestAsyncCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the aloft binary; skipped with -short")
	}
	const events = 10000
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "aloft")
	build := exec.Command("go", "build", "-o", bin, "./cmd/aloft")
	build.Dir = testfn.ModuleRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("cannot build aloft: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dataDir, outDir := filepath.Join(tmp, "data"), filepath.Join(tmp, "out")
	os.MkdirAll(outDir, 0o755)
	const token = "crash-test-token"
	up := startUp(t, bin, dataDir, addr, token)

	client := &cli.Client{BaseURL: "http://" + addr, Token: token}
	fnDir := t.TempDir()
	testfn.Write(fnDir, map[string]string{"main.py": recordIDs})
	var zip bytes.Buffer
	if err := cli.ZipDir(&zip, fnDir); err != nil {
		t.Fatal(err)
	}
	cfg := model.Config{Name: "record", Runtime: model.RuntimePython, Handler: "main.handler", Env: map[string]string{"APP_OUT": outDir}}
	if _, err := client.Deploy(context.Background(), "record", cfg, &zip, int64(zip.Len()), nil); err != nil {
		t.Fatal(err)
	}

	// Accept the events from 32 concurrent clients.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	var accepted sync.Map
	var n atomic.Int64
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > events {
					return
				}
				id := fmt.Sprintf("ev-%05d", i)
				req, _ := http.NewRequest("POST", client.BaseURL+"/2015-03-31/functions/record/invocations",
					strings.NewReader(`{"id":"`+id+`"}`))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("X-Amz-Invocation-Type", "Event")
				resp, err := hc.Do(req)
				if err != nil {
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					accepted.Store(id, true)
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	acceptDur := time.Since(start)
	idsFile := filepath.Join(outDir, "ids")
	before := len(readIDs(t, idsFile))
	t.Logf("accepted %d of %d events in %s (%.0f/s); %d processed when killed",
		n.Load(), events, acceptDur.Round(time.Millisecond), float64(n.Load())/acceptDur.Seconds(), before)
	if n.Load() != events {
		t.Errorf("accepted %d events, want %d", n.Load(), events)
	}
	if before >= events {
		t.Logf("every event was processed before the kill; the restart had nothing left to drain")
	}
	up.kill()

	restart := time.Now()
	up = startUp(t, bin, dataDir, addr, token)
	deadline := time.Now().Add(2 * time.Minute)
	var seen map[string]int
	for {
		seen = readIDs(t, idsFile)
		missing := 0
		accepted.Range(func(k, _ any) bool {
			if seen[k.(string)] == 0 {
				missing++
			}
			return true
		})
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d accepted events were never processed\n%s", missing, up.out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	dups, extra := 0, 0
	for id, c := range seen {
		if _, ok := accepted.Load(id); !ok {
			extra++
		}
		dups += c - 1
	}
	t.Logf("all %d accepted events processed; %d drained after the restart in %s; %d duplicate executions",
		n.Load(), n.Load()-int64(before), time.Since(restart).Round(time.Millisecond), dups)
	if extra != 0 {
		t.Errorf("%d processed ids were never accepted", extra)
	}
}
