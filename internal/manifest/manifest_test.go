package manifest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    model.Config
		wantErr string // substring of the error; "" means no error
	}{
		{
			name: "good file",
			in: `# a function
name: hello
runtime: python
handler: main.handler
memory: 256
timeout: 10
env:
  GREETING: hi
  EMPTY: ""
url_auth: token
ephemeral_storage: 1024
network: outbound
`,
			want: model.Config{
				Name: "hello", Runtime: model.RuntimePython, Handler: "main.handler",
				Memory: 256, Timeout: 10, Env: map[string]string{"GREETING": "hi", "EMPTY": ""},
				URLAuth: "token", EphemeralStorage: 1024, Network: "outbound",
			},
		},
		{
			name: "async settings and triggers",
			in: `name: jobs
runtime: go
maximum_retry_attempts: 0
maximum_event_age: 3600
on_success:
  nats: jobs.done
on_failure:
  function: jobs-failed
triggers:
  - type: schedule
    expression: rate(5 minutes)
  - type: nats
    subject: orders.>
    url: nats://10.0.0.5:4222
    durable: jobs
`,
			want: model.Config{
				Name: "jobs", Runtime: model.RuntimeGo, MaximumRetryAttempts: new(int), MaximumEventAge: 3600,
				OnSuccess: &model.Destination{NATS: "jobs.done"}, OnFailure: &model.Destination{Function: "jobs-failed"},
				Triggers: []model.Trigger{
					{Type: "schedule", Expression: "rate(5 minutes)"},
					{Type: "nats", Subject: "orders.>", URL: "nats://10.0.0.5:4222", Durable: "jobs"},
				},
			},
		},
		{
			name:    "unknown trigger key",
			in:      "name: jobs\ntriggers:\n  - type: schedule\n    cron: x\n",
			wantErr: `line 4: unknown key "cron"`,
		},
		{
			name: "minimal file",
			in:   "name: tiny\nruntime: go\n",
			want: model.Config{Name: "tiny", Runtime: model.RuntimeGo},
		},
		{name: "empty file", in: "", want: model.Config{}},
		{name: "only comments", in: "# nothing yet\n", want: model.Config{}},
		{
			name:    "unknown key",
			in:      "name: hello\nruntime: python\nmemroy: 256\n",
			wantErr: `line 3: unknown key "memroy" (known: name, runtime,`,
		},
		{
			name:    "bad type",
			in:      "name: hello\nmemory: lots\n",
			wantErr: "line 2: cannot unmarshal !!str `lots` into int",
		},
		{
			name:    "env is not a map",
			in:      "name: hello\nenv: [A, B]\n",
			wantErr: "line 2: cannot unmarshal !!seq into map[string]string",
		},
		{
			name:    "not a mapping",
			in:      "- name: hello\n",
			wantErr: "line 1: cannot unmarshal !!seq into model.Config",
		},
		{
			name:    "syntax error",
			in:      "name: hello\n  runtime: python\n",
			wantErr: "line 2: mapping values are not allowed in this context",
		},
		{
			name:    "two documents",
			in:      "name: a\n---\nname: b\n",
			wantErr: "line 2: only one YAML document is allowed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("err=nil, want one containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err=%q, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("err=%q spans several lines, want one", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err=%v, want nil", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err=%v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte("name: hello\nruntime: node\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatalf("err=%v, want nil", err)
	}
	if want := (model.Config{Name: "hello", Runtime: model.RuntimeNode}); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if err := os.WriteFile(path, []byte("name: hello\nbogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir)
	if want := path + `: line 2: unknown key "bogus"`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("err=%v, want prefix %q", err, want)
	}
}
