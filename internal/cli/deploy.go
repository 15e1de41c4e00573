package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/aloft-dev/aloft/internal/manifest"
	"github.com/aloft-dev/aloft/internal/model"
)

// deployFlags are the config overrides of `aloft deploy`; only the flags
// given on the command line override the manifest.
type deployFlags struct {
	name, runtime, handler, urlAuth, network string
	memory, timeout, ephemeralStorage        int
	env                                      []string // K=V
}

func (f *deployFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "function name (default: the manifest's, else the folder's name)")
	fs.StringVar(&f.runtime, "runtime", "", "runtime: go, node, python or provided")
	fs.StringVar(&f.handler, "handler", "", "handler: file.export (node), module.function (python)")
	fs.IntVar(&f.memory, "memory", 0, "memory in MB (default 128)")
	fs.IntVar(&f.timeout, "timeout", 0, "timeout in seconds (default 3)")
	fs.StringArrayVar(&f.env, "env", nil, "environment variable K=V (repeatable; adds to the manifest's env)")
	fs.StringVar(&f.urlAuth, "url-auth", "", "function URL auth: none or token")
	fs.StringVar(&f.network, "network", "", "network: none or outbound")
	fs.IntVar(&f.ephemeralStorage, "ephemeral-storage", 0, "size of /tmp in MB (default 512)")
}

// mergeConfig returns base (the manifest) overridden by the flags set in fs,
// with the name defaulting to the base name of dir. It does not validate.
func mergeConfig(base model.Config, fs *pflag.FlagSet, f deployFlags, dir string) (model.Config, error) {
	c := base
	set := func(name string) bool { return fs.Changed(name) }
	if set("name") {
		c.Name = f.name
	}
	if set("runtime") {
		c.Runtime = model.Runtime(f.runtime)
	}
	if set("handler") {
		c.Handler = f.handler
	}
	if set("memory") {
		c.Memory = f.memory
	}
	if set("timeout") {
		c.Timeout = f.timeout
	}
	if set("url-auth") {
		c.URLAuth = f.urlAuth
	}
	if set("network") {
		c.Network = f.network
	}
	if set("ephemeral-storage") {
		c.EphemeralStorage = f.ephemeralStorage
	}
	if len(f.env) > 0 {
		env := make(map[string]string, len(base.Env)+len(f.env))
		for k, v := range base.Env {
			env[k] = v
		}
		for _, kv := range f.env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return c, fmt.Errorf("--env %q must have the form KEY=VALUE", kv)
			}
			env[k] = v
		}
		c.Env = env
	}
	if c.Name == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return c, fmt.Errorf("cannot name the function after %s: %w", dir, err)
		}
		c.Name = filepath.Base(abs)
	}
	return c, nil
}

func newDeployCmd() *cobra.Command {
	var f deployFlags
	cmd := &cobra.Command{
		Use:   "deploy [DIR]",
		Short: "Package a function folder and deploy it",
		Long: "Read DIR/aloft.yaml (default DIR: the current folder), apply the flags over it,\n" +
			"package DIR as a zip and upload it. Runtime go is built locally with the go\n" +
			"toolchain into a Linux `bootstrap` and deployed as runtime provided.\n" +
			"Prints the function's URL.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			return deploy(cmd, dir, f)
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func deploy(cmd *cobra.Command, dir string, f deployFlags) error {
	ctx := cmd.Context()
	stderr := cmd.ErrOrStderr()
	if info, err := os.Stat(dir); err != nil {
		return fmt.Errorf("cannot deploy %s: %w", dir, err)
	} else if !info.IsDir() {
		return fmt.Errorf("cannot deploy %s: not a folder", dir)
	}
	base, err := manifest.Load(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	cfg, err := mergeConfig(base, cmd.Flags(), f, dir)
	if err != nil {
		return err
	}
	norm, err := cfg.Normalize()
	if err != nil {
		return err
	}
	client, err := clientFromEnv()
	if err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "aloft-deploy-")
	if err != nil {
		return fmt.Errorf("cannot deploy: %w", err)
	}
	defer os.RemoveAll(tmp)
	zf, err := os.Create(filepath.Join(tmp, "code.zip"))
	if err != nil {
		return fmt.Errorf("cannot deploy: %w", err)
	}
	defer zf.Close()
	if norm.Runtime == model.RuntimeGo {
		fmt.Fprintf(stderr, "building %s with go build\n", dir)
		bin := filepath.Join(tmp, "bootstrap")
		if err := BuildGo(ctx, dir, bin, stderr); err != nil {
			return err
		}
		if err := ZipFile(zf, bin, "bootstrap"); err != nil {
			return err
		}
		cfg.Runtime, cfg.Handler = model.RuntimeProvided, "bootstrap"
	} else {
		if norm.Runtime == model.RuntimeProvided {
			// The server would refuse the bundle; say so before uploading.
			info, err := os.Stat(filepath.Join(dir, "bootstrap"))
			if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
				return fmt.Errorf("cannot deploy %s: runtime provided needs an executable file bootstrap in the folder", dir)
			}
		}
		if err := ZipDirContext(ctx, zf, dir); err != nil {
			return err
		}
	}
	size, err := zf.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("cannot deploy: %w", err)
	}
	if _, err := zf.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("cannot deploy: %w", err)
	}

	p := newProgress(stderr, cfg.Name)
	fn, err := client.Deploy(ctx, cfg.Name, cfg, zf, size, p.update)
	p.done(err == nil)
	if err != nil {
		return err
	}
	sha := fn.CodeSHA256
	if len(sha) > 12 {
		sha = sha[:12]
	}
	fmt.Fprintf(stderr, "deployed %s: %s, %d MB, %d s timeout, code %s (%s)\n",
		fn.Name, fn.Runtime, fn.Memory, fn.Timeout, sha, formatBytes(fn.CodeSize))
	url := fn.URL
	if url == "" {
		url = client.BaseURL + "/fn/" + fn.Name + "/"
	}
	fmt.Fprintln(cmd.OutOrStdout(), url)
	return nil
}

// progress reports an upload on w: a line redrawn in place when w is a
// terminal, else one line at the end.
type progress struct {
	w           io.Writer
	tty         bool
	name        string
	start, last time.Time
	sent, total int64
}

func newProgress(w io.Writer, name string) *progress {
	return &progress{w: w, tty: isTerminal(w), name: name, start: time.Now()}
}

func (p *progress) update(sent, total int64) {
	p.sent, p.total = sent, total
	if !p.tty {
		return
	}
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond || sent == total {
		p.last = now
		fmt.Fprintf(p.w, "\r\033[Kuploading %s: %s of %s (%d%%)", p.name, formatBytes(sent), formatBytes(total), sent*100/max(total, 1))
	}
}

func (p *progress) done(ok bool) {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	if ok {
		fmt.Fprintf(p.w, "uploaded %s: %s in %s\n", p.name, formatBytes(p.sent), time.Since(p.start).Round(time.Millisecond))
	}
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
