package e2e_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// BenchmarkAsync sends b.N Event invocations of a no-op Go function from
// 64 concurrent HTTP clients to a node with durable (file) JetStream
// storage, and reports the accepted events per second (each 202 waits for
// JetStream's acknowledgement) and the end-to-end rate until every event
// ran. Run it with a fixed count:
//
//	go test ./internal/e2e -run '^$' -bench BenchmarkAsync -benchtime 20000x
func BenchmarkAsync(b *testing.B) {
	dir, err := os.MkdirTemp("", "aloft-bench-goecho-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := testfn.BuildGo("./internal/testfn/goecho", dir); err != nil {
		b.Fatal(err)
	}
	n, err := node.Start(context.Background(), node.Config{
		DataDir: b.TempDir(), Listen: "127.0.0.1:0", Isolation: isolation(), Grace: 10 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	client := &cli.Client{BaseURL: n.URL(), Token: n.Token()}
	buf := new(bytes.Buffer)
	if err := cli.ZipDir(buf, dir); err != nil {
		b.Fatal(err)
	}
	cfg := model.Config{Name: "noop", Runtime: model.RuntimeProvided}
	if _, err := client.Deploy(context.Background(), "noop", cfg, buf, int64(buf.Len()), nil); err != nil {
		b.Fatal(err)
	}
	invocations := func() int64 {
		u, err := client.Usage(context.Background(), "noop")
		if err != nil {
			b.Fatal(err)
		}
		return u.Total.Invocations
	}
	base := invocations()

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}
	var next, accepted atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				req, _ := http.NewRequest("POST", n.URL()+"/2015-03-31/functions/noop/invocations", strings.NewReader(`{"value":1}`))
				req.Header.Set("Authorization", "Bearer "+n.Token())
				req.Header.Set("X-Amz-Invocation-Type", "Event")
				resp, err := hc.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					accepted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	acceptDur := time.Since(start)
	ranAtAccept := invocations() - base
	for invocations()-base < accepted.Load() {
		time.Sleep(20 * time.Millisecond)
	}
	total := time.Since(start)
	b.StopTimer()
	if accepted.Load() != int64(b.N) {
		b.Errorf("accepted %d of %d events", accepted.Load(), b.N)
	}
	b.ReportMetric(float64(accepted.Load())/acceptDur.Seconds(), "accepted/s")
	b.ReportMetric(float64(accepted.Load())/total.Seconds(), "end-to-end/s")
	if rest := accepted.Load() - ranAtAccept; rest > 0 && total > acceptDur {
		b.ReportMetric(float64(rest)/(total-acceptDur).Seconds(), "drain-after-accept/s")
	}
}
