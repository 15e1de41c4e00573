package worker

import (
	"runtime"
	"testing"
)

func TestVCPUs(t *testing.T) {
	cases := []struct{ memoryMB, want int }{
		{128, 1}, {1769, 1}, {1770, 2}, {3538, 2}, {3539, 3}, {10240, 6},
	}
	for _, c := range cases {
		want := min(c.want, runtime.NumCPU())
		if got := vCPUs(c.memoryMB); got != want {
			t.Errorf("vCPUs(%d) = %d, want %d", c.memoryMB, got, want)
		}
	}
}
