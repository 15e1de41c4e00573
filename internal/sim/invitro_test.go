package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aloft-dev/aloft/internal/scheduler"
)

// invitroDir is the invitro-100 sample of the Azure Functions 2019 trace,
// relative to this package.
var invitroDir = filepath.Join("..", "..", "..", "shared", "data", "azure-trace", "invitro-100")

func loadInvitro(t *testing.T) Trace {
	t.Helper()
	if _, err := os.Stat(filepath.Join(invitroDir, "invocations.csv")); err != nil {
		t.Skipf("invitro-100 trace not found at %s: %v", invitroDir, err)
	}
	tr, err := LoadTrace(invitroDir)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestInvitro(t *testing.T) {
	tr := loadInvitro(t)
	if len(tr.Functions) != 100 || tr.Minutes != 480 || tr.FirstMinute != 480 {
		t.Fatalf("trace has %d functions, %d minutes from %d; want 100, 480 from 480", len(tr.Functions), tr.Minutes, tr.FirstMinute)
	}
	// Several seeds, so the outcome is not one lucky draw of start offsets.
	for _, spread := range []Spread{SpreadUniform, SpreadEven} {
		for seed := uint64(1); seed <= 5; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", spread, seed), func(t *testing.T) {
				opts := Options{Seed: seed, Spread: spread}
				fixed, err := Run(tr, scheduler.FixedKeepAlive{}, opts)
				if err != nil {
					t.Fatal(err)
				}
				adaptive, err := Run(tr, scheduler.HybridHistogram{}, opts)
				if err != nil {
					t.Fatal(err)
				}
				fixed.Policy, adaptive.Policy = Label(scheduler.FixedKeepAlive{}), Label(scheduler.HybridHistogram{})
				var b strings.Builder
				if err := Format(&b, fixed, adaptive); err != nil {
					t.Fatal(err)
				}
				if seed == 1 {
					t.Logf("\n%s", b.String())
				}
				if fixed.Invocations != adaptive.Invocations {
					t.Errorf("invocations differ: fixed %d, adaptive %d", fixed.Invocations, adaptive.Invocations)
				}
				if adaptive.ColdStarts >= fixed.ColdStarts {
					t.Errorf("adaptive cold starts=%d, want fewer than fixed's %d", adaptive.ColdStarts, fixed.ColdStarts)
				}
				if adaptive.IdleGBSeconds > fixed.IdleGBSeconds {
					t.Errorf("adaptive idle GB-s=%.0f, want at most fixed's %.0f", adaptive.IdleGBSeconds, fixed.IdleGBSeconds)
				}
			})
		}
	}
}
