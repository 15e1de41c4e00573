//go:build linux

package process

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/sandbox/plain"
)

// benchDrivers are the isolating driver with its pool of pre-forked inits
// (the default), the isolating driver without a pool, and, as the baseline
// in the same run, the plain driver.
func benchDrivers(b *testing.B) map[string]sandbox.Driver {
	return map[string]sandbox.Driver{
		"process":          newDriver(b, Options{}),
		"process-unpooled": newDriver(b, Options{Prewarm: -1}),
		"plain":            &plain.Driver{},
	}
}

func benchSpec(b *testing.B, d sandbox.Driver, code string, n int) *sandbox.Spec {
	spec := &sandbox.Spec{
		ID: fmt.Sprintf("b%d-%d", os.Getpid(), n), Function: "bench", CodeDir: code,
		Env: []string{"PATH=/usr/bin:/bin"}, MemoryMB: 128, TmpMB: 64,
		RuntimeAPI: runtimeapi.New(), Output: os.Stderr,
	}
	task, _ := d.Paths(spec)
	spec.Args = []string{task + "/bootstrap"}
	return spec
}

// BenchmarkColdStart measures Start to the runtime's first GET /next for the
// Go hostile runtime (a small static Go bootstrap), and reports the median.
// "process" is a start that finds a pre-forked init in the pool: between
// iterations, with the timer stopped, it waits until the pool is full again,
// so every iteration takes a pooled init. "process-unpooled" forks the init
// in Start (what every start paid before the pool, and what a start pays
// when a burst empties the pool).
func BenchmarkColdStart(b *testing.B) {
	needIsolation(b)
	code := codeDir(b, map[string]string{"bootstrap": hostileBinary(b)})
	drivers := benchDrivers(b)
	for _, name := range []string{"process", "process-unpooled", "plain"} {
		d := drivers[name]
		b.Run(name, func(b *testing.B) {
			var times []time.Duration
			for n := 0; b.Loop(); n++ {
				if pd, ok := d.(*Driver); ok && pd.pool != nil {
					b.StopTimer()
					waitPool(b, pd)
					b.StartTimer()
				}
				spec := benchSpec(b, d, code, n)
				t0 := time.Now()
				inst, err := d.Start(context.Background(), spec)
				if err != nil {
					b.Fatal(err)
				}
				select {
				case <-spec.RuntimeAPI.(*runtimeapi.Server).Ready():
				case <-time.After(30 * time.Second):
					b.Fatal("no /next")
				}
				times = append(times, time.Since(t0))
				b.StopTimer()
				inst.Stop()
				b.StartTimer()
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-median")
		})
	}
}

// BenchmarkWarmInvoke measures one invocation round trip on a warm instance.
func BenchmarkWarmInvoke(b *testing.B) {
	needIsolation(b)
	code := codeDir(b, map[string]string{"bootstrap": hostileBinary(b)})
	drivers := benchDrivers(b)
	for _, name := range []string{"process", "plain"} {
		d := drivers[name]
		b.Run(name, func(b *testing.B) {
			spec := benchSpec(b, d, code, 0)
			inst, err := d.Start(context.Background(), spec)
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Stop()
			api := spec.RuntimeAPI.(*runtimeapi.Server)
			<-api.Ready()
			inv := &runtimeapi.Invocation{Payload: []byte("echo:x"), Deadline: time.Now().Add(time.Hour)}
			for n := 0; b.Loop(); n++ {
				inv.RequestID = fmt.Sprintf("r%d", n)
				if _, err := api.Invoke(context.Background(), inv); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
