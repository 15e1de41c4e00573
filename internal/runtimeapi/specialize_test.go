package runtimeapi

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

const specializePath = "/2018-06-01/runtime/aloft/specialize"

type specializeAnswer struct {
	status int
	env    map[string]string
	err    error
}

func getSpecialize(url string) <-chan specializeAnswer {
	ch := make(chan specializeAnswer, 1)
	go func() {
		resp, err := http.Get(url + specializePath)
		if err != nil {
			ch <- specializeAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		var doc struct {
			Env map[string]string `json:"env"`
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			err = json.Unmarshal(b, &doc)
		}
		ch <- specializeAnswer{status: resp.StatusCode, env: doc.Env, err: err}
	}()
	return ch
}

func TestSpecialize(t *testing.T) {
	env := map[string]string{"_HANDLER": "index.handler", "APP": "x"}
	cases := []struct {
		name       string
		before     bool // Specialize before the runtime asks
		close      bool // close instead of specialising
		wantStatus int
	}{
		{"runtime waits", false, false, http.StatusOK},
		{"worker first", true, false, http.StatusOK},
		{"closed while waiting", false, true, http.StatusInternalServerError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New()
			url := serve(t, s)
			if c.before {
				if err := s.Specialize(env); err != nil {
					t.Fatal(err)
				}
			}
			ans := getSpecialize(url)
			select {
			case <-s.PoolReady():
			case <-time.After(30 * time.Second):
				t.Fatal("PoolReady not closed after GET aloft/specialize")
			}
			select {
			case <-s.Ready():
				t.Fatal("Ready closed by GET aloft/specialize, want only by /next")
			default:
			}
			switch {
			case c.close:
				s.Close()
			case !c.before:
				if err := s.Specialize(env); err != nil {
					t.Fatal(err)
				}
			}
			var a specializeAnswer
			select {
			case a = <-ans:
			case <-time.After(30 * time.Second):
				t.Fatal("GET aloft/specialize did not return")
			}
			if a.err != nil {
				t.Fatal(a.err)
			}
			if a.status != c.wantStatus {
				t.Fatalf("got status %d, want %d", a.status, c.wantStatus)
			}
			if c.wantStatus == http.StatusOK && (len(a.env) != len(env) || a.env["_HANDLER"] != env["_HANDLER"] || a.env["APP"] != env["APP"]) {
				t.Errorf("got env %v, want %v", a.env, env)
			}
			if !c.close {
				if err := s.Specialize(env); err != ErrSpecialized {
					t.Errorf("second Specialize: got %v, want ErrSpecialized", err)
				}
			}
		})
	}
}

func TestSpecializeMethod(t *testing.T) {
	url := serve(t, New())
	resp, err := http.Post(url+specializePath, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: got status %d, want 405", resp.StatusCode)
	}
}
