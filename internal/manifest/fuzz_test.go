package manifest

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
)

// FuzzManifest: any aloft.yaml either fails as bad input or yields a
// config whose normal form is stable (normalizing again, or storing it as
// JSON and reading it back, changes nothing) and can be handed to a
// process (no NUL byte in what becomes its environment).
func FuzzManifest(f *testing.F) {
	for _, seed := range []string{
		"name: a\nruntime: node\n",
		"name: a\nruntime: python\nhandler: main.handler\nmemory: 256\ntimeout: 10\nenv:\n  K: v\n",
		"name: a\nruntime: go\nreserved_concurrency: 0\nprovisioned_concurrency: 1\n",
		"name: a\nruntime: node\nenv:\n  K: \"a\\0b\"\n",
		"name: a\nruntime: node\nhandler: \"x\\0.y\"\n",
		"name: a\nruntime: node\nmaximum_retry_attempts: 0\non_failure: {function: b}\n",
		"name: a\nruntime: node\ntriggers:\n  - schedule: rate(5 minutes)\n",
		"name: a\nruntime: node\nmemroy: 1\n",
		"- a\n- b\n", "name: [1]\n", "{}", "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		norm, err := cfg.Normalize()
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) {
				t.Fatalf("Normalize: %v, want an ErrInvalid error", err)
			}
			return
		}
		again, err := norm.Normalize()
		if err != nil || !reflect.DeepEqual(again, norm) {
			t.Fatalf("normalizing twice: %+v, %v; want %+v", again, err, norm)
		}
		b, err := json.Marshal(norm)
		if err != nil {
			t.Fatal(err)
		}
		var stored model.Config
		if err := json.Unmarshal(b, &stored); err != nil {
			t.Fatal(err)
		}
		if stored, err = stored.Normalize(); err != nil || !reflect.DeepEqual(stored, norm) {
			t.Fatalf("stored and read back: %+v, %v; want %+v", stored, err, norm)
		}
		for k, v := range norm.Env {
			if strings.ContainsRune(k+v, 0) {
				t.Errorf("env %q=%q accepted with a NUL byte", k, v)
			}
		}
		if strings.ContainsRune(norm.Handler, 0) {
			t.Errorf("handler %q accepted with a NUL byte", norm.Handler)
		}
	})
}
