package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Records written close together are stored as few messages and read back
// one by one, unchanged; a record too big to join a batch starts a new one.
func TestBatchedRecords(t *testing.T) {
	s, _ := open(t, t.TempDir())
	var want []string
	for i := range 200 {
		rec := fmt.Sprintf("START %d\nno newline at the end %d", i, i)
		if i == 100 {
			rec = strings.Repeat("x", batchMaxBytes-10) // does not fit behind the first 100
		}
		want = append(want, rec)
		if err := s.AppendLog("fn", []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx(t)); err != nil {
		t.Fatal(err)
	}
	got := readLogs(t, s, "fn", time.Time{})
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d = %.40q, want %.40q", i, got[i], want[i])
		}
	}
	info, err := s.js.Stream(ctx(t), logsStreamPrefix+"fn")
	if err != nil {
		t.Fatal(err)
	}
	// At least two messages (the big record cannot share the first), and
	// far fewer than records unless the machine stalled for whole windows.
	if n := info.CachedInfo().State.Msgs; n < 2 || n > 20 {
		t.Errorf("%d records stored as %d messages, want 2…20", len(want), n)
	}
}

// A message without the records header, as stored before batching or by
// another writer, is one record; a header that does not match the data
// loses nothing.
func TestRecordsOfOtherMessages(t *testing.T) {
	s, _ := open(t, t.TempDir())
	if err := s.logStream("fn"); err != nil {
		t.Fatal(err)
	}
	publish := func(data, header string) {
		t.Helper()
		m := nats.NewMsg(logsSubject + "fn")
		m.Data = []byte(data)
		if header != "" {
			m.Header.Set(recordsHeader, header)
		}
		if _, err := s.js.PublishMsg(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	publish("one whole record\n", "")
	publish("abcdef", "2,zz")  // bad size: the rest stays one record
	publish("abcdef", "2,100") // size beyond the data: likewise
	got := strings.Join(readLogs(t, s, "fn", time.Time{}), "|")
	if want := "one whole record\n|ab|cdef|ab|cdef"; got != want {
		t.Errorf("records = %q, want %q", got, want)
	}
}
