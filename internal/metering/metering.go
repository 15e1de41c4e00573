// Package metering aggregates usage records into per-function totals and
// prices them the way a cloud bills: per GB-second of billed duration and
// per million requests. The aggregate is derived state, rebuilt from the
// usage stream when a node starts.
package metering

import (
	"sort"
	"sync"

	"github.com/aloft-dev/aloft/internal/model"
)

// Lambda's x86 list prices, the defaults.
const (
	DefaultPricePerGBSecond       = 0.0000166667
	DefaultPricePerMillionRequest = 0.20
)

// Prices turn usage into cost.
type Prices struct {
	PerGBSecond       float64 `json:"price_per_gb_second"`
	PerMillionRequest float64 `json:"price_per_million_requests"`
}

// Totals is the usage of one function, or of all.
type Totals struct {
	Function    string `json:"function,omitempty"`
	Invocations int64  `json:"invocations"`
	Errors      int64  `json:"errors"`
	ColdStarts  int64  `json:"cold_starts"`
	Throttles   int64  `json:"throttles"`
	// Provisioned counts invocations served by provisioned-concurrency instances.
	Provisioned int64   `json:"provisioned_invocations"`
	BilledMs    int64   `json:"billed_ms"`
	GBSeconds   float64 `json:"gb_seconds"`
	CostUSD     float64 `json:"cost_usd"`
}

func (t *Totals) add(u *model.Usage) {
	if u.Outcome == model.OutcomeThrottled {
		t.Throttles++
		return
	}
	t.Invocations++
	if u.Outcome != model.OutcomeSuccess {
		t.Errors++
	}
	if u.Cold {
		t.ColdStarts++
	}
	if u.Provisioned {
		t.Provisioned++
	}
	t.BilledMs += u.BilledMs
	t.GBSeconds += u.GBSeconds
}

func (t *Totals) price(p Prices) {
	t.CostUSD = t.GBSeconds*p.PerGBSecond + float64(t.Invocations)/1e6*p.PerMillionRequest
}

// Report is what `aloft usage` shows.
type Report struct {
	Prices
	Functions []Totals `json:"functions"`
	Total     Totals   `json:"total"`
}

// Aggregator keeps running totals per function. The zero value is ready.
type Aggregator struct {
	mu  sync.Mutex
	per map[string]*Totals
}

// Add counts one usage record.
func (a *Aggregator) Add(u *model.Usage) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.per == nil {
		a.per = make(map[string]*Totals)
	}
	t := a.per[u.Function]
	if t == nil {
		t = &Totals{Function: u.Function}
		a.per[u.Function] = t
	}
	t.add(u)
}

// Report prices the totals of one function (or every function when name
// is "").
func (a *Aggregator) Report(name string, p Prices) Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := Report{Prices: p, Functions: []Totals{}}
	for fn, t := range a.per {
		if name != "" && fn != name {
			continue
		}
		c := *t
		c.price(p)
		r.Functions = append(r.Functions, c)
		r.Total.Invocations += c.Invocations
		r.Total.Errors += c.Errors
		r.Total.ColdStarts += c.ColdStarts
		r.Total.Throttles += c.Throttles
		r.Total.Provisioned += c.Provisioned
		r.Total.BilledMs += c.BilledMs
		r.Total.GBSeconds += c.GBSeconds
	}
	r.Total.price(p)
	sort.Slice(r.Functions, func(i, j int) bool { return r.Functions[i].Function < r.Functions[j].Function })
	return r
}
