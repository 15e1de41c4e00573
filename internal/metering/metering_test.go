package metering

import (
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
)

var lambda = Prices{PerGBSecond: DefaultPricePerGBSecond, PerMillionRequest: DefaultPricePerMillionRequest}

func usage(fn, outcome string, billedMs int64, memoryMB int) *model.Usage {
	return &model.Usage{Function: fn, Outcome: outcome, BilledMs: billedMs, MemoryMB: memoryMB,
		GBSeconds: model.GBSeconds(billedMs, memoryMB)}
}

// near compares money and GB-seconds to well below a billable amount.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

func TestReport(t *testing.T) {
	var a Aggregator // the zero value is ready
	cold := usage("api", model.OutcomeSuccess, 1000, 1024)
	cold.Cold = true
	a.Add(cold)                                          // 1 GB-s
	a.Add(usage("api", model.OutcomeSuccess, 500, 512))  // 0.25 GB-s
	a.Add(usage("api", model.OutcomeError, 100, 2048))   // 0.2 GB-s
	a.Add(usage("api", model.OutcomeThrottled, 0, 1024)) // not billed
	prov := usage("worker", model.OutcomeTimeout, 3000, 128)
	prov.Provisioned = true
	a.Add(prov) // 0.375 GB-s
	a.Add(usage("worker", model.OutcomeThrottled, 0, 128))
	a.Add(usage("worker", model.OutcomeThrottled, 0, 128))

	api := Totals{Function: "api", Invocations: 3, Errors: 1, ColdStarts: 1, Throttles: 1,
		BilledMs: 1600, GBSeconds: 1.45,
		// 1.45 GB-s × $0.0000166667 + 3 requests × $0.20 / 1e6
		CostUSD: 1.45*0.0000166667 + 3*0.20/1e6}
	worker := Totals{Function: "worker", Invocations: 1, Errors: 1, Throttles: 2, Provisioned: 1,
		BilledMs: 3000, GBSeconds: 0.375, CostUSD: 0.375*0.0000166667 + 0.20/1e6}
	all := Totals{Invocations: 4, Errors: 2, ColdStarts: 1, Throttles: 3, Provisioned: 1,
		BilledMs: 4600, GBSeconds: 1.825, CostUSD: 1.825*0.0000166667 + 4*0.20/1e6}

	tests := []struct {
		name  string
		fn    string
		want  []Totals
		total Totals
	}{
		{"all functions", "", []Totals{api, worker}, all},
		{"one function", "worker", []Totals{worker}, worker},
		{"unknown function", "nope", []Totals{}, Totals{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := a.Report(tt.fn, lambda)
			if r.Prices != lambda {
				t.Errorf("prices=%+v, want %+v", r.Prices, lambda)
			}
			if len(r.Functions) != len(tt.want) {
				t.Fatalf("got %d functions, want %d: %+v", len(r.Functions), len(tt.want), r.Functions)
			}
			for i := range tt.want {
				checkTotals(t, r.Functions[i], tt.want[i])
			}
			total := tt.total
			total.Function = ""
			checkTotals(t, r.Total, total)
		})
	}
}

func checkTotals(t *testing.T, got, want Totals) {
	t.Helper()
	g, w := got, want
	g.GBSeconds, g.CostUSD, w.GBSeconds, w.CostUSD = 0, 0, 0, 0
	if g != w {
		t.Errorf("totals %+v, want %+v", got, want)
	}
	if !near(got.GBSeconds, want.GBSeconds) || !near(got.CostUSD, want.CostUSD) {
		t.Errorf("%q: gb_seconds=%.12g cost=%.12g, want %.12g %.12g",
			want.Function, got.GBSeconds, got.CostUSD, want.GBSeconds, want.CostUSD)
	}
}

// TestLambdaExamples checks the pricing against worked examples in
// Lambda's pricing terms.
func TestLambdaExamples(t *testing.T) {
	tests := []struct {
		name        string
		invocations int
		billedMs    int64
		memoryMB    int
		wantGBs     float64
		wantCost    float64
	}{
		// 100k requests of 1.2 s at 1536 MB: 180,000 GB-s, $3.00 + $0.02.
		{"100k at 1.5 GB", 100_000, 1200, 1536, 180000, 180000*0.0000166667 + 0.02},
		// 200k requests of 1 ms at 128 MB: 25 GB-s.
		{"200k at 128 MB", 200_000, 1, 128, 25, 25*0.0000166667 + 0.04},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a Aggregator
			for range tt.invocations {
				a.Add(usage("fn", model.OutcomeSuccess, tt.billedMs, tt.memoryMB))
			}
			r := a.Report("fn", lambda)
			// Summing millions of floats drifts by ~1e-14 relative; a
			// billing cent is far above that.
			if math.Abs(r.Total.GBSeconds-tt.wantGBs) > 1e-9*tt.wantGBs {
				t.Errorf("gb_seconds=%v, want %v", r.Total.GBSeconds, tt.wantGBs)
			}
			if math.Abs(r.Total.CostUSD-tt.wantCost) > 1e-9*tt.wantCost {
				t.Errorf("cost=%v, want %v", r.Total.CostUSD, tt.wantCost)
			}
		})
	}
}

func TestCustomPrices(t *testing.T) {
	var a Aggregator
	a.Add(usage("fn", model.OutcomeSuccess, 2000, 1024)) // 2 GB-s
	r := a.Report("", Prices{PerGBSecond: 1, PerMillionRequest: 1e6})
	if r.Total.CostUSD != 3 || r.Functions[0].CostUSD != 3 {
		t.Errorf("cost=%v/%v, want 3 (2 GB-s at $1 + 1 request at $1)", r.Total.CostUSD, r.Functions[0].CostUSD)
	}
	if r := a.Report("", Prices{}); r.Total.CostUSD != 0 {
		t.Errorf("cost at zero prices=%v, want 0", r.Total.CostUSD)
	}
}

// TestReportJSON pins the field names `aloft usage --json` prints.
func TestReportJSON(t *testing.T) {
	var a Aggregator
	a.Add(usage("fn", model.OutcomeSuccess, 1000, 1024))
	b, err := json.Marshal(a.Report("", Prices{PerGBSecond: 1, PerMillionRequest: 0}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"price_per_gb_second":1,"price_per_million_requests":0,"functions":[` +
		`{"function":"fn","invocations":1,"errors":0,"cold_starts":0,"throttles":0,"provisioned_invocations":0,"billed_ms":1000,"gb_seconds":1,"cost_usd":1}],` +
		`"total":{"invocations":1,"errors":0,"cold_starts":0,"throttles":0,"provisioned_invocations":0,"billed_ms":1000,"gb_seconds":1,"cost_usd":1}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	var empty Aggregator
	b, _ = json.Marshal(empty.Report("", lambda))
	if want := `"functions":[]`; !json.Valid(b) || !strings.Contains(string(b), want) {
		t.Errorf("empty report %s, want %s (not null)", b, want)
	}
}

func TestConcurrentAdd(t *testing.T) {
	var a Aggregator
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				a.Add(usage(string(rune('a'+g%2)), model.OutcomeSuccess, 1, 1024))
				a.Report("", lambda)
			}
		}()
	}
	wg.Wait()
	r := a.Report("", lambda)
	if r.Total.Invocations != 800 || len(r.Functions) != 2 || r.Functions[0].Invocations != 400 {
		t.Errorf("total=%d functions=%+v, want 800 over a and b", r.Total.Invocations, r.Functions)
	}
}
