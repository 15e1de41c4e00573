package e2e_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/sandbox/process"
)

// fdProbe lists the function's open descriptors (where they lead) and what
// each one that is a directory holds.
const fdProbe = `import os
def handler(event, context):
    links, listed = {}, {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            links[fd] = os.readlink("/proc/self/fd/" + fd)
            listed[fd] = os.listdir("/proc/self/fd/" + fd + "/")
        except OSError:
            pass
    return {"links": links, "listed": listed}
`

// TestInheritedDescriptorsDoNotReachFunctions starts `aloft up` with a
// descriptor to a host directory and one to a host file left open by its
// parent (twice, at 3 and 4 and at 5 and 6: the sandbox init gets its own
// descriptors 3 and 4 from the node): no function instance may hold either (through them a function
// read the host's / and wrote into its /tmp).
func TestInheritedDescriptorsDoNotReachFunctions(t *testing.T) {
	for _, mode := range []string{"none", "required"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "required" {
				if _, err := process.Probe(); err != nil {
					t.Skipf("process sandbox unavailable: %v", err)
				}
			}
			hostDir := t.TempDir()
			secret := filepath.Join(hostDir, "host-secret")
			os.WriteFile(secret, []byte("secret"), 0o600)
			dir, err := os.Open(hostDir)
			if err != nil {
				t.Fatal(err)
			}
			defer dir.Close()
			file, err := os.Open(secret)
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()

			up := runUpWithFiles(t, filepath.Join(t.TempDir(), "data"), freeAddr(t), []*os.File{dir, file, dir, file}, "--isolation", mode)
			up.deployFiles(t, model.Config{Name: "fds", Runtime: model.RuntimePython, Handler: "main.handler"},
				map[string]string{"main.py": fdProbe})
			var got struct {
				Links  map[string]string   `json:"links"`
				Listed map[string][]string `json:"listed"`
			}
			body := up.invokeOK(t, "fds", `{}`)
			if err := json.Unmarshal([]byte(body), &got); err != nil || len(got.Links) == 0 {
				t.Fatalf("probe answered %s (%v)", body, err)
			}
			for fd, target := range got.Links {
				if strings.HasPrefix(target, hostDir) {
					t.Errorf("the function holds descriptor %s to %s, inherited by the node", fd, target)
				}
				for _, name := range got.Listed[fd] {
					if name == "host-secret" {
						t.Errorf("through descriptor %s (%s) the function lists the host directory", fd, target)
					}
				}
			}
			up.stop(t)
		})
	}
}
