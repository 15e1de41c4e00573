package cli

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/aloft-dev/aloft/internal/model"
)

// The templates carry a .tmpl suffix so that Go does not see a go.mod (which
// embed refuses) or a main package inside this module.
//
//go:embed templates
var templates embed.FS

// Versions written into a Go scaffold's go.mod. lambdaVersion is the
// aws-lambda-go of Aloft's own go.mod, so that the scaffold builds offline
// from a module cache that built Aloft; templates/go/go.sum.tmpl holds the
// matching sums (a test checks both against Aloft's go.mod and go.sum).
const (
	lambdaVersion = "v1.55.1"
	goVersion     = "1.26" // aws-lambda-go v1.55.1 needs it
)

// scaffoldRuntimes are the runtimes `aloft init` knows.
var scaffoldRuntimes = []model.Runtime{model.RuntimeGo, model.RuntimeNode, model.RuntimePython}

// Scaffold writes a hello-world function of the runtime named name into
// dir, which must not exist or be empty. It returns the files written,
// relative to dir, sorted.
func Scaffold(dir, name string, runtime model.Runtime) ([]string, error) {
	if !model.ValidName(name) {
		return nil, fmt.Errorf("cannot scaffold: name %q must match [A-Za-z0-9_-]{1,64}", name)
	}
	tdir := "templates/" + string(runtime)
	entries, err := fs.ReadDir(templates, tdir)
	if err != nil || !knownScaffold(runtime) {
		return nil, fmt.Errorf("cannot scaffold: runtime %q is not one of go, node, python", runtime)
	}
	if des, err := os.ReadDir(dir); err == nil && len(des) > 0 {
		return nil, fmt.Errorf("cannot scaffold into %s: the folder exists and is not empty", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cannot scaffold into %s: %w", dir, err)
	}
	data := struct{ Name, GoVersion, LambdaVersion string }{name, goVersion, lambdaVersion}
	files := map[string][]byte{}
	for _, e := range entries {
		src, err := fs.ReadFile(templates, tdir+"/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("cannot scaffold: %w", err)
		}
		t, err := template.New(e.Name()).Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("cannot scaffold: %w", err)
		}
		var out bytes.Buffer
		if err := t.Execute(&out, data); err != nil {
			return nil, fmt.Errorf("cannot scaffold: %w", err)
		}
		files[strings.TrimSuffix(e.Name(), ".tmpl")] = out.Bytes()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot scaffold into %s: %w", dir, err)
	}
	names := make([]string, 0, len(files))
	for n, content := range files {
		if err := os.WriteFile(filepath.Join(dir, n), content, 0o644); err != nil {
			return nil, fmt.Errorf("cannot scaffold into %s: %w", dir, err)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func knownScaffold(r model.Runtime) bool {
	for _, k := range scaffoldRuntimes {
		if k == r {
			return true
		}
	}
	return false
}

func newInitCmd() *cobra.Command {
	var runtime, dir string
	cmd := &cobra.Command{
		Use:   "init NAME --runtime go|node|python [--dir DIR]",
		Short: "Create a hello-world function folder",
		Long: "Create a folder NAME (or DIR) holding aloft.yaml and a hello-world handler\n" +
			"for the runtime, ready for `aloft deploy`. The folder must not exist or be empty.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if dir == "" {
				dir = name
			}
			files, err := Scaffold(dir, name, model.Runtime(runtime))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "created %s (%s): %s\n", dir, runtime, strings.Join(files, ", "))
			printNext(out, dir, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&runtime, "runtime", "", "runtime of the function: go, node or python")
	cmd.Flags().StringVar(&dir, "dir", "", "folder to create (default NAME)")
	cmd.MarkFlagRequired("runtime")
	return cmd
}

func printNext(w io.Writer, dir, name string) {
	fmt.Fprintf(w, "next:\n  aloft deploy %s\n  aloft invoke %s --data '{\"name\":\"you\"}'\n", dir, name)
}
