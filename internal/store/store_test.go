package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
)

// wait bounds every store call; generous, since the machine may be loaded.
const wait = 30 * time.Second

// open starts an embedded server on dir and opens a Store on it. Both are
// closed when the test ends, or earlier through the returned func.
func open(t *testing.T, dir string) (*Store, func()) {
	t.Helper()
	e, err := StartEmbedded(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := Open(ctx, e.Conn)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { s.Close(); e.Close() }) }
	t.Cleanup(stop)
	return s, stop
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

func fn(name, sha string, at time.Time) *model.Function {
	return &model.Function{Config: model.Config{Name: name, Runtime: model.RuntimeNode, Handler: "index.handler",
		Memory: 256, Env: map[string]string{"K": "v"}}, CodeSHA256: sha, CodeSize: 10, Version: model.DefaultVersion,
		LastModified: at}
}

func names(fns []*model.Function) string {
	var out []string
	for _, f := range fns {
		out = append(out, f.Name)
	}
	return strings.Join(out, ",")
}

func TestFunctions(t *testing.T) {
	s, _ := open(t, t.TempDir())
	type change struct {
		name string
		sha  string // "" when deleted
	}
	var mu sync.Mutex
	var changes []change
	s.OnChange(func(name string, f *model.Function) {
		mu.Lock()
		defer mu.Unlock()
		c := change{name: name}
		if f != nil {
			c.sha = f.CodeSHA256
		}
		changes = append(changes, c)
	})

	if _, err := s.Function("a"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("Function of an empty store: %v, want ErrNotFound", err)
	}
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, f := range []*model.Function{fn("b", "s1", t0), fn("a", "s2", t0), fn("b", "s3", t0.Add(time.Second))} {
		if err := s.PutFunction(ctx(t), f); err != nil {
			t.Fatal(err)
		}
	}
	// PutFunction returns once the cache holds the change.
	got, err := s.Function("b")
	if err != nil {
		t.Fatal(err)
	}
	if got.CodeSHA256 != "s3" || got.Memory != 256 || got.Env["K"] != "v" || !got.LastModified.Equal(t0.Add(time.Second)) {
		t.Errorf("Function(b)=%+v, want the second put", got)
	}
	if n := names(s.Functions()); n != "a,b" {
		t.Errorf("Functions=%s, want a,b", n)
	}
	if err := s.DeleteFunction(ctx(t), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Function("a"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Function(a) after delete: %v, want ErrNotFound", err)
	}
	if n := names(s.Functions()); n != "b" {
		t.Errorf("Functions=%s, want b", n)
	}

	// The hooks ran after each change, in order, before the call returned.
	mu.Lock()
	got4 := fmt.Sprint(changes)
	mu.Unlock()
	if want := fmt.Sprint([]change{{"b", "s1"}, {"a", "s2"}, {"b", "s3"}, {"a", ""}}); got4 != want {
		t.Errorf("OnChange saw %s, want %s", got4, want)
	}
}

func TestCode(t *testing.T) {
	s, _ := open(t, t.TempDir())
	big := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // ~4.8 MB: several chunks
	for sha, data := range map[string][]byte{"small": []byte("zip"), "big": big} {
		if err := s.PutCode(ctx(t), sha, data); err != nil {
			t.Fatal(err)
		}
		got, err := s.Code(ctx(t), sha)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("Code(%s): %d bytes, %v; want the %d stored", sha, len(got), err, len(data))
		}
	}
	if err := s.DeleteCode(ctx(t), "small"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Code(ctx(t), "small"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Code after delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Code(ctx(t), "never"); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("Code of a missing bundle: %v, want ErrNotFound", err)
	}
	if err := s.DeleteCode(ctx(t), "never"); err != nil {
		t.Errorf("DeleteCode of a missing bundle: %v, want nil", err)
	}
}

// readLogs runs Logs without follow; it must return on its own.
func readLogs(t *testing.T, s *Store, function string, since time.Time) []string {
	t.Helper()
	var got []string
	err := s.Logs(ctx(t), function, since, false, func(b []byte) error {
		got = append(got, string(b))
		return nil
	})
	if err != nil {
		t.Fatalf("Logs(%s): %v", function, err)
	}
	return got
}

func TestLogs(t *testing.T) {
	s, _ := open(t, t.TempDir())
	if got := readLogs(t, s, "fn", time.Time{}); len(got) != 0 {
		t.Errorf("Logs of an empty stream=%q, want none", got)
	}
	for i := range 300 { // more than one fetch batch
		if err := s.AppendLog("fn", []byte(fmt.Sprintf("line %d", i))); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := s.AppendLog("other", []byte("not mine")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	got := readLogs(t, s, "fn", time.Time{})
	if len(got) != 300 || got[0] != "line 0" || got[299] != "line 299" {
		t.Fatalf("Logs returned %d records (%q…), want line 0…line 299", len(got), first(got))
	}
	for i, g := range got {
		if g != fmt.Sprintf("line %d", i) {
			t.Fatalf("record %d=%q, want line %d", i, g, i)
		}
	}
	if got := readLogs(t, s, "other", time.Time{}); len(got) != 1 || got[0] != "not mine" {
		t.Errorf("Logs(other)=%q, want [not mine]", got)
	}

	// since: only records stored at or after it. Stream timestamps come
	// from the server's clock, so leave a margin around the cut.
	time.Sleep(20 * time.Millisecond)
	cut := time.Now()
	time.Sleep(20 * time.Millisecond)
	for _, l := range []string{"late 1", "late 2"} {
		if err := s.AppendLog("fn", []byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := readLogs(t, s, "fn", cut); strings.Join(got, ",") != "late 1,late 2" {
		t.Errorf("Logs since the cut=%q, want [late 1 late 2]", got)
	}
	if got := readLogs(t, s, "fn", time.Now().Add(time.Hour)); len(got) != 0 {
		t.Errorf("Logs since the future=%q, want none", got)
	}

	// emit's error ends the walk and is returned.
	stop := errors.New("enough")
	n := 0
	err := s.Logs(ctx(t), "fn", time.Time{}, false, func([]byte) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("Logs with a failing emit: %v after %d records, want %v after 3", err, n, stop)
	}
}

func first(s []string) []string { return s[:min(3, len(s))] }

func TestLogsFollow(t *testing.T) {
	s, _ := open(t, t.TempDir())
	if err := s.AppendLog("fn", []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- s.Logs(fctx, "fn", time.Time{}, true, func(b []byte) error {
			lines <- string(b)
			return nil
		})
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("followed %q, want %q", got, want)
			}
		case err := <-done:
			t.Fatalf("Logs returned %v while following", err)
		case <-time.After(wait):
			t.Fatalf("timed out waiting for %q", want)
		}
	}
	expect("old")
	if err := s.AppendLog("fn", []byte("new")); err != nil {
		t.Fatal(err)
	}
	expect("new")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Logs after cancel: %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("Logs with follow did not return after its context was cancelled")
	}
}

func TestUsage(t *testing.T) {
	s, _ := open(t, t.TempDir())
	count := func(function string) (int, string) {
		var ids []string
		if err := s.Usage(ctx(t), function, func(u *model.Usage) { ids = append(ids, u.RequestID) }); err != nil {
			t.Fatalf("Usage(%q): %v", function, err)
		}
		return len(ids), strings.Join(ids, ",")
	}
	if n, _ := count(""); n != 0 {
		t.Errorf("Usage of an empty stream: %d records, want 0", n)
	}
	at := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for i, f := range []string{"a", "b", "a", "c", "a"} {
		u := &model.Usage{Time: at, Function: f, RequestID: fmt.Sprintf("%s%d", f, i), BilledMs: 100, MemoryMB: 128,
			GBSeconds: model.GBSeconds(100, 128), Outcome: model.OutcomeSuccess, Cold: i == 0}
		if err := s.AppendUsage(u); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		function string
		want     string
	}{
		// Records written within one batch window come back grouped by
		// function, each function's in order.
		{"", "a0,a2,a4,b1,c3"},
		{"a", "a0,a2,a4"},
		{"c", "c3"},
		{"none", ""},
	}
	for _, tt := range tests {
		if _, got := count(tt.function); got != tt.want {
			t.Errorf("Usage(%q)=%s, want %s", tt.function, got, tt.want)
		}
	}
	var got *model.Usage
	if err := s.Usage(ctx(t), "b", func(u *model.Usage) { got = u }); err != nil {
		t.Fatal(err)
	}
	if got == nil || !got.Time.Equal(at) || got.GBSeconds != 0.0125 || got.Outcome != "success" || got.BilledMs != 100 {
		t.Errorf("usage record=%+v, want it as stored", got)
	}
}

// TestReopen: everything survives a restart on the same data directory.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, stop := open(t, dir)
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.PutFunction(ctx(t), fn("keep", "k1", at)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutFunction(ctx(t), fn("gone", "g1", at)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteFunction(ctx(t), "gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCode(ctx(t), "k1", []byte("bundle")); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLog("keep", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendUsage(&model.Usage{Function: "keep", RequestID: "r1", Outcome: model.OutcomeSuccess}); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	stop()

	s, _ = open(t, dir)
	if n := names(s.Functions()); n != "keep" {
		t.Errorf("Functions after reopen=%s, want keep", n)
	}
	if f, err := s.Function("keep"); err != nil || f.CodeSHA256 != "k1" || !f.LastModified.Equal(at) {
		t.Errorf("Function(keep) after reopen=%+v, %v", f, err)
	}
	if b, err := s.Code(ctx(t), "k1"); err != nil || string(b) != "bundle" {
		t.Errorf("Code after reopen=%q, %v", b, err)
	}
	if got := readLogs(t, s, "keep", time.Time{}); strings.Join(got, ",") != "hello" {
		t.Errorf("Logs after reopen=%q, want [hello]", got)
	}
	var ids []string
	if err := s.Usage(ctx(t), "", func(u *model.Usage) { ids = append(ids, u.RequestID) }); err != nil || strings.Join(ids, ",") != "r1" {
		t.Errorf("Usage after reopen=%v, %v; want [r1]", ids, err)
	}
}

// TestTwoStores: a second Store on the same server (as another node's)
// sees changes made through the first, and its hooks fire for them.
func TestTwoStores(t *testing.T) {
	e, err := StartEmbedded(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	s1, err := Open(ctx(t), e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s1.Close)
	s2, err := Open(ctx(t), e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.Close)
	seen := make(chan string, 4)
	s2.OnChange(func(name string, f *model.Function) {
		if f == nil {
			seen <- "-" + name
			return
		}
		seen <- name
	})
	if err := s1.PutFunction(ctx(t), fn("x", "s", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := s1.DeleteFunction(ctx(t), "x"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"x", "-x"} {
		select {
		case got := <-seen:
			if got != want {
				t.Errorf("second store saw %s, want %s", got, want)
			}
		case <-time.After(wait):
			t.Fatalf("second store did not see %s", want)
		}
	}
}

// TestReadsLeaveNoConsumer: reading logs and usage many times does not
// pile up consumers on the streams (a server limit would fail reads).
func TestReadsLeaveNoConsumer(t *testing.T) {
	s, _ := open(t, t.TempDir())
	js := s.JetStream()
	ctx := context.Background()
	if err := s.AppendLog("f", []byte("line\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if err := s.Logs(ctx, "f", time.Time{}, false, func([]byte) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.Usage(ctx, "", func(*model.Usage) {}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"ALOFT_LOGS_f", "ALOFT_USAGE"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers != 0 {
			t.Errorf("%s has %d consumers after the reads, want 0", name, info.State.Consumers)
		}
	}
}

// A function flooding its logs loses only its own oldest records: another
// function's logs and usage records stay whole.
func TestLogFloodHarmsOnlyItsFunction(t *testing.T) {
	defer func(old int64) { logsMaxBytesPerFn = old }(logsMaxBytesPerFn)
	logsMaxBytesPerFn = 1 << 20
	s, _ := open(t, t.TempDir())
	for i := range 10 {
		if err := s.AppendLog("quiet", fmt.Appendf(nil, "quiet %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AppendUsage(&model.Usage{Function: "quiet", RequestID: "q1", BilledMs: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	for i := range 256 { // 8 MB, 8× the bound
		if err := s.AppendLog("flood", append(fmt.Appendf(nil, "flood %d ", i), chunk...)); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendUsage(&model.Usage{Function: "flood", RequestID: fmt.Sprint(i), BilledMs: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := readLogs(t, s, "quiet", time.Time{}); len(got) != 10 || got[0] != "quiet 0" {
		t.Errorf("quiet's logs after the flood = %d records (%q…), want all 10", len(got), first(got))
	}
	flood := readLogs(t, s, "flood", time.Time{})
	kept := 0
	for _, r := range flood {
		kept += len(r)
	}
	if kept > int(logsMaxBytesPerFn) || len(flood) == 0 || !strings.HasPrefix(flood[len(flood)-1], "flood 255 ") {
		t.Errorf("flood kept %d bytes in %d records, want its newest records within %d bytes", kept, len(flood), logsMaxBytesPerFn)
	}
	var quietUsage, floodUsage int
	if err := s.Usage(ctx(t), "", func(u *model.Usage) {
		switch u.Function {
		case "quiet":
			quietUsage++
		case "flood":
			floodUsage++
		}
	}); err != nil {
		t.Fatal(err)
	}
	if quietUsage != 1 || floodUsage != 256 {
		t.Errorf("usage records: quiet %d, flood %d; want 1 and 256 (none discarded)", quietUsage, floodUsage)
	}
}

// Deleting a function deletes its logs; a function of the same name made
// later starts with none and logs again.
func TestDeleteFunctionDeletesLogs(t *testing.T) {
	s, _ := open(t, t.TempDir())
	if err := s.PutFunction(ctx(t), fn("gone", "sha", time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLog("gone", []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteFunction(ctx(t), "gone"); err != nil {
		t.Fatal(err)
	}
	if got := readLogs(t, s, "gone", time.Time{}); len(got) != 0 {
		t.Errorf("logs after delete = %q, want none", got)
	}
	if err := s.AppendLog("gone", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := readLogs(t, s, "gone", time.Time{}); strings.Join(got, ",") != "new" {
		t.Errorf("logs of the new function = %q, want [new]", got)
	}
}
