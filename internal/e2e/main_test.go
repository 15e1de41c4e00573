package e2e_test

import (
	"os"
	"testing"

	"github.com/aloft-dev/aloft/internal/sandbox/process"
)

// TestMain lets this test binary serve as the isolating sandbox's init, as
// the aloft binary does.
func TestMain(m *testing.M) {
	process.MaybeRunInit()
	os.Exit(m.Run())
}
