package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpRefusesBadFlags: settings no node can run with are refused with the
// flag's name, before anything is created.
func TestUpRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--keep-alive", "-5m"}, "--keep-alive -5m0s: must be positive"},
		{[]string{"--keep-alive", "0"}, "--keep-alive 0s: must be positive"},
		{[]string{"--grace", "-1s"}, "--grace -1s: must be zero or more"},
		{[]string{"--queue-timeout", "-1ms"}, "--queue-timeout -1ms: must be zero or more"},
		{[]string{"--async-retry-backoff", "-1m"}, "--async-retry-backoff -1m0s: must be zero or more"},
		{[]string{"--pool-size", "-1"}, "--pool-size -1: must be zero or more"},
		{[]string{"--memory", "-512"}, "--memory -512: must be zero or more"},
		{[]string{"--async-concurrency", "-4"}, "--async-concurrency -4: must be zero or more"},
		{[]string{"--price-gb-second", "-0.1"}, "--price-gb-second -0.1: must be zero or more"},
		{[]string{"--price-million-requests", "Inf"}, "--price-million-requests +Inf: must be zero or more"},
		{[]string{"--price-gb-second", "NaN"}, "--price-gb-second NaN: must be zero or more"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			cmd := newUpCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(append([]string{"--data", data, "--listen", "127.0.0.1:0"}, tc.args...))
			err := cmd.Execute()
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the data directory was created (%v)", err)
			}
		})
	}
}
