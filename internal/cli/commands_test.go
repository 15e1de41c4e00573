package cli

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/aloft-dev/aloft/internal/model"
)

// run executes the aloft command tree with args, the way main does, and
// returns what it printed and PrintError's line.
func run(t *testing.T, ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot("test")
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	err = root.ExecuteContext(ctx)
	PrintError(&errOut, err)
	return out.String(), errOut.String(), err
}

// useServer points the CLI at srv with the right token.
func useServer(t *testing.T, srv *apiServer) {
	t.Setenv("ALOFT_URL", srv.URL)
	t.Setenv("ALOFT_TOKEN", testToken)
}

func TestDeployPython(t *testing.T) {
	srv := newAPIServer(t)
	useServer(t, srv)
	dir := filepath.Join(t.TempDir(), "hello")
	if _, err := Scaffold(dir, "hello", model.RuntimePython); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, map[string]string{".git/HEAD": "x", ".aloft/token": "secret"}, nil)

	stdout, stderr, err := run(t, context.Background(), "", "deploy", dir, "--memory", "256", "--env", "A=1", "--env", "B=x=y")
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	if want := srv.URL + "/fn/hello/\n"; stdout != want {
		t.Errorf("stdout=%q, want %q", stdout, want)
	}
	if !strings.Contains(stderr, "uploaded hello: ") || !strings.Contains(stderr, "deployed hello: python, 256 MB") {
		t.Errorf("stderr=%q, want the upload and deploy lines", stderr)
	}
	fn, _ := srv.get("hello")
	if fn.Memory != 256 || fn.Timeout != 3 || !reflect.DeepEqual(fn.Env, map[string]string{"A": "1", "B": "x=y"}) {
		t.Errorf("deployed %+v, want memory 256 and env A, B", fn.Config)
	}
	files, _ := readZip(t, srv.codeOf("hello"))
	if got, want := keys(files), []string{"aloft.yaml", "main.py"}; !reflect.DeepEqual(got, want) {
		t.Errorf("bundle=%v, want %v", got, want)
	}
}

func TestDeployGo(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-mod=readonly")
	t.Setenv("GOTOOLCHAIN", "local")
	t.Setenv("GOWORK", "off")
	srv := newAPIServer(t)
	useServer(t, srv)
	dir := filepath.Join(t.TempDir(), "gofn")
	if _, err := Scaffold(dir, "gofn", model.RuntimeGo); err != nil {
		t.Fatal(err)
	}
	_, stderr, err := run(t, context.Background(), "", "deploy", dir, "--name", "renamed")
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, stderr)
	}
	fn, ok := srv.get("renamed")
	if !ok {
		t.Fatalf("function renamed was not deployed; stderr=%s", stderr)
	}
	if fn.Runtime != model.RuntimeProvided || fn.Handler != "bootstrap" {
		t.Errorf("deployed runtime %q handler %q, want provided bootstrap", fn.Runtime, fn.Handler)
	}
	zr, err := zip.NewReader(bytes.NewReader(srv.codeOf("renamed")), int64(len(srv.codeOf("renamed"))))
	if err != nil {
		t.Fatal(err)
	}
	if len(zr.File) != 1 || zr.File[0].Name != "bootstrap" {
		t.Fatalf("bundle holds %d files, want only bootstrap", len(zr.File))
	}
	if mode := zr.File[0].Mode(); mode.Perm() != 0o755 {
		t.Errorf("bootstrap mode=%v, want 0755", mode)
	}
	rc, err := zr.File[0].Open()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4)
	rc.Read(head)
	rc.Close()
	if string(head) != "\x7fELF" {
		t.Errorf("bootstrap starts with %q, want an ELF executable", head)
	}
}

func TestDeployRejectsLocally(t *testing.T) {
	srv := newAPIServer(t)
	useServer(t, srv)
	tests := []struct {
		name     string
		manifest string // "" means no aloft.yaml
		args     []string
		want     string // PrintError's line
	}{
		{"no runtime", "", nil, "aloft: invalid parameter: runtime is required (provided, go, node or python)\n"},
		{"bad memory flag", "name: x\nruntime: python\n", []string{"--memory", "64"}, "aloft: invalid parameter: memory 64 MB is outside 128-10240\n"},
		{"bad env flag", "name: x\nruntime: python\n", []string{"--env", "NOEQUALS"}, "aloft: --env \"NOEQUALS\" must have the form KEY=VALUE\n"},
		{"provided without bootstrap", "name: x\nruntime: provided\n", nil, "runtime provided needs an executable file bootstrap in the folder\n"},
		{"unknown manifest key", "name: x\nruntime: python\nmemroy: 1\n", nil, `line 3: unknown key "memroy"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.manifest != "" {
				writeTree(t, dir, map[string]string{"aloft.yaml": tt.manifest}, nil)
			}
			before := srv.requestCount()
			_, stderr, err := run(t, context.Background(), "", append([]string{"deploy", dir}, tt.args...)...)
			if err == nil {
				t.Fatal("err=nil, want an error")
			}
			if !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr=%q, want one line with %q", stderr, tt.want)
			}
			if n := srv.requestCount() - before; n != 0 {
				t.Errorf("%d requests reached the server, want 0", n)
			}
		})
	}
}

func TestMergeConfig(t *testing.T) {
	base := model.Config{Name: "fromfile", Runtime: model.RuntimePython, Memory: 512, Env: map[string]string{"A": "1", "B": "2"}}
	tests := []struct {
		name string
		base model.Config
		dir  string
		args []string
		want model.Config
	}{
		{
			name: "no flags keep the manifest",
			base: base, dir: "/x/folder",
			want: base,
		},
		{
			name: "flags override",
			base: base, dir: "/x/folder",
			args: []string{"--name", "other", "--runtime", "node", "--handler", "app.main", "--memory", "1024",
				"--timeout", "30", "--url-auth", "token", "--network", "outbound", "--ephemeral-storage", "1024"},
			want: model.Config{Name: "other", Runtime: model.RuntimeNode, Handler: "app.main", Memory: 1024, Timeout: 30,
				URLAuth: "token", Network: "outbound", EphemeralStorage: 1024, Env: map[string]string{"A": "1", "B": "2"}},
		},
		{
			name: "env flags add to and override the manifest's",
			base: base, dir: "/x/folder",
			args: []string{"--env", "B=3", "--env", "C="},
			want: model.Config{Name: "fromfile", Runtime: model.RuntimePython, Memory: 512, Env: map[string]string{"A": "1", "B": "3", "C": ""}},
		},
		{
			name: "name defaults to the folder",
			dir:  "/x/my-func",
			args: []string{"--runtime", "go"},
			want: model.Config{Name: "my-func", Runtime: model.RuntimeGo},
		},
		{
			name: "a flag set to zero still overrides",
			base: base, dir: "/x/folder",
			args: []string{"--memory", "0"},
			want: model.Config{Name: "fromfile", Runtime: model.RuntimePython, Env: map[string]string{"A": "1", "B": "2"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f deployFlags
			fs := pflag.NewFlagSet("deploy", pflag.ContinueOnError)
			f.register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			got, err := mergeConfig(tt.base, fs, f, tt.dir)
			if err != nil {
				t.Fatalf("err=%v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if base.Env["B"] != "2" {
		t.Fatalf("mergeConfig changed the manifest's env: B=%q", base.Env["B"])
	}
}

func TestInvokeCommand(t *testing.T) {
	srv := newAPIServer(t)
	useServer(t, srv)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"main.py": "", "event.json": `{"from":"file"}`}, nil)
	for _, name := range []string{"echo", "fail"} {
		if _, _, err := run(t, context.Background(), "", "deploy", dir, "--name", name, "--runtime", "python"); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name       string
		stdin      string
		args       []string
		wantOut    string
		wantErrOut string
		wantErr    error
	}{
		{name: "default event", args: []string{"echo"}, wantOut: "{}\n"},
		{name: "inline event", args: []string{"echo", "--data", `{"a":1}`}, wantOut: `{"a":1}` + "\n"},
		{name: "event from a file", args: []string{"echo", "-d", "@" + filepath.Join(dir, "event.json")}, wantOut: `{"from":"file"}` + "\n"},
		{name: "event from stdin", stdin: `[1,2]`, args: []string{"echo", "--data", "@-"}, wantOut: "[1,2]\n"},
		{
			name: "log tail", args: []string{"echo", "--log-tail"},
			wantOut: "{}\n", wantErrOut: "START RequestId: 1\nREPORT RequestId: 1\n",
		},
		{
			name: "function error", args: []string{"fail"},
			wantErrOut: `{"errorMessage":"boom","errorType":"Error","stackTrace":[]}` + "\n", wantErr: ErrFunctionFailed,
		},
		{
			name: "event is not JSON", args: []string{"echo", "--data", "{oops"},
			wantErrOut: "aloft: the event given with --data is not valid JSON\n", wantErr: errors.New(""),
		},
		{
			name: "unknown function", args: []string{"nope"},
			wantErrOut: "aloft: ResourceNotFoundException: Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope\n",
			wantErr:    &APIError{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := run(t, context.Background(), tt.stdin, append([]string{"invoke"}, tt.args...)...)
			if stdout != tt.wantOut || stderr != tt.wantErrOut {
				t.Errorf("stdout=%q stderr=%q, want %q and %q", stdout, stderr, tt.wantOut, tt.wantErrOut)
			}
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Errorf("err=%v, want nil", err)
				}
			case *APIError:
				if !errors.As(err, &want) {
					t.Errorf("err=%v, want an *APIError", err)
				}
			default:
				if err == nil || (want == ErrFunctionFailed && !errors.Is(err, ErrFunctionFailed)) {
					t.Errorf("err=%v, want %v", err, want)
				}
			}
		})
	}
}

func TestListRemoveUsageStatus(t *testing.T) {
	srv := newAPIServer(t)
	useServer(t, srv)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"index.mjs": ""}, nil)
	if _, _, err := run(t, context.Background(), "", "deploy", dir, "--name", "web", "--runtime", "node"); err != nil {
		t.Fatal(err)
	}

	stdout, _, err := run(t, context.Background(), "", "ls")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("ls printed %q, want a header and one row", stdout)
	}
	if got := strings.Fields(lines[0]); !reflect.DeepEqual(got, strings.Fields("NAME RUNTIME MEMORY TIMEOUT WARM BUSY PROV QUEUED OLDEST DLQ LAST MODIFIED URL")) {
		t.Errorf("header=%q", lines[0])
	}
	row := strings.Fields(lines[1])
	if len(row) != 15 || row[0] != "web" || row[1] != "node" || row[2] != "128" || row[4] != "3" || row[14] != srv.URL+"/fn/web/" {
		t.Errorf("row=%q", lines[1])
	}

	stdout, _, err = run(t, context.Background(), "", "usage", "hello")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FUNCTION", "COST USD", "hello", "TOTAL", "0.0051", "0.00000208", "prices: 0.0000166667 USD per GB-second, 0.2 USD per million requests"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("usage output lacks %q:\n%s", want, stdout)
		}
	}

	stdout, _, err = run(t, context.Background(), "", "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"isolation: isolated (enabled: userns, cgroups)", "missing:   seccomp", "driver:    process", "instances: 1 warm, 0 busy"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, stdout)
		}
	}

	if stdout, _, err = run(t, context.Background(), "", "rm", "web"); err != nil || stdout != "removed web\n" {
		t.Fatalf("rm: stdout=%q err=%v", stdout, err)
	}
	if _, ok := srv.get("web"); ok {
		t.Fatal("web is still deployed after rm")
	}
	_, stderr, err := run(t, context.Background(), "", "rm", "web")
	if err == nil || !strings.HasPrefix(stderr, "aloft: ResourceNotFoundException: ") {
		t.Fatalf("second rm: stderr=%q err=%v, want ResourceNotFoundException", stderr, err)
	}
}

// lineWaiter is an io.Writer that calls fn once what was written contains want.
type lineWaiter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	fn   func()
	done bool
}

func (w *lineWaiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		w.fn()
	}
	return len(p), nil
}

func TestLogsCommand(t *testing.T) {
	srv := newAPIServer(t)
	useServer(t, srv)
	stdout, _, err := run(t, context.Background(), "", "logs", "hello", "--since", "10m")
	if err != nil {
		t.Fatal(err)
	}
	if want := "START RequestId: 1 since=10m\nhello from hello\nEND RequestId: 1\n"; stdout != want {
		t.Fatalf("stdout=%q, want %q", stdout, want)
	}

	// -f keeps the stream open until the context ends, which is not an error.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lineWaiter{want: "END RequestId: 1\n", fn: cancel}
	root := NewRoot("test")
	root.SetArgs([]string{"logs", "hello", "-f"})
	root.SetOut(out)
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("logs -f: err=%v, want nil after an interrupt", err)
	}
	if !out.done {
		t.Fatalf("logs -f printed %q, want the log lines", out.buf.String())
	}
}

func TestTokenFromDataDir(t *testing.T) {
	srv := newAPIServer(t)
	t.Setenv("ALOFT_URL", srv.URL)
	t.Setenv("ALOFT_TOKEN", "")
	dir := t.TempDir()
	t.Chdir(dir)
	_, stderr, err := run(t, context.Background(), "", "ls")
	if err == nil || !strings.HasPrefix(stderr, "aloft: UnauthorizedException: ") {
		t.Fatalf("without a token: stderr=%q err=%v, want UnauthorizedException", stderr, err)
	}
	writeTree(t, dir, map[string]string{".aloft/token": testToken + "\n"}, nil)
	if _, stderr, err := run(t, context.Background(), "", "ls"); err != nil {
		t.Fatalf("with ./.aloft/token: %v %s", err, stderr)
	}
}

func TestServerDown(t *testing.T) {
	url := closedURL(t)
	t.Setenv("ALOFT_URL", url)
	t.Setenv("ALOFT_TOKEN", "x")
	_, stderr, err := run(t, context.Background(), "", "status")
	want := "aloft: cannot reach the Aloft server at " + url + " (connection refused): start it with `aloft up`, or set ALOFT_URL\n"
	if err == nil || stderr != want {
		t.Fatalf("stderr=%q, want %q", stderr, want)
	}
}

func TestInitCommand(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	stdout, _, err := run(t, context.Background(), "", "init", "myfn", "--runtime", "python")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout, "created myfn (python): aloft.yaml, main.py\n") {
		t.Errorf("stdout=%q", stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "myfn", "main.py")); err != nil {
		t.Error(err)
	}
	_, stderr, err := run(t, context.Background(), "", "init", "myfn", "--runtime", "node")
	if err == nil || stderr != "aloft: cannot scaffold into myfn: the folder exists and is not empty\n" {
		t.Errorf("second init: stderr=%q err=%v", stderr, err)
	}
	_, stderr, err = run(t, context.Background(), "", "init", "other")
	if err == nil || !strings.Contains(stderr, `required flag(s) "runtime" not set`) {
		t.Errorf("init without --runtime: stderr=%q err=%v", stderr, err)
	}
	if _, err := run2(t, "init", "x", "--runtime", "node", "--dir", filepath.Join(dir, "custom")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "custom", "index.mjs")); err != nil {
		t.Error(err)
	}
}

func run2(t *testing.T, args ...string) (string, error) {
	t.Helper()
	stdout, _, err := run(t, context.Background(), "", args...)
	return stdout, err
}

func TestRootExtraCommands(t *testing.T) {
	ran := false
	up := &cobra.Command{Use: "up", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
	root := NewRoot("v1.2.3", up)
	root.SetArgs([]string{"up"})
	if err := root.Execute(); err != nil || !ran {
		t.Fatalf("up: ran=%v err=%v", ran, err)
	}
	var out bytes.Buffer
	root = NewRoot("v1.2.3")
	root.SetArgs([]string{"--version"})
	root.SetOut(&out)
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "v1.2.3") {
		t.Fatalf("--version printed %q, %v", out.String(), err)
	}
	root = NewRoot("v1")
	root.SetArgs([]string{"bogus"})
	var errOut bytes.Buffer
	root.SetErr(&errOut)
	root.SetOut(&errOut)
	err := root.Execute()
	if err == nil || errOut.Len() != 0 {
		t.Fatalf("unknown command: err=%v, printed %q; want an error and nothing printed", err, errOut.String())
	}
}

func TestDeployProvided(t *testing.T) {
	srv := newAPIServer(t)
	useServer(t, srv)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"aloft.yaml": "name: sh\nruntime: provided\n",
		"bootstrap":  "#!/bin/sh\nexit 0\n",
		"lib/x.txt":  "data",
	}, map[string]bool{"bootstrap": true})
	if _, stderr, err := run(t, context.Background(), "", "deploy", dir); err != nil {
		t.Fatalf("deploy: %v %s", err, stderr)
	}
	files, modes := readZip(t, srv.codeOf("sh"))
	if got, want := keys(files), []string{"aloft.yaml", "bootstrap", "lib/x.txt"}; !reflect.DeepEqual(got, want) {
		t.Errorf("bundle=%v, want %v", got, want)
	}
	if modes["bootstrap"].Perm() != 0o755 {
		t.Errorf("bootstrap mode=%v, want 0755", modes["bootstrap"])
	}
}
