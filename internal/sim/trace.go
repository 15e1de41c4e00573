// Package sim replays an Azure Functions trace through Aloft's keep-alive
// policies (internal/scheduler) in virtual time and reports cold starts and
// idle memory-time, so policies can be compared on real workloads.
package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// Trace is a set of functions with per-minute invocation counts, in the
// layout of the Azure Functions 2019 trace (Shahrad et al., ATC'20) as
// sampled by vHive's InVitro.
type Trace struct {
	FirstMinute int // label of the first minute column (480 in invitro-100)
	Minutes     int // number of minute columns
	Functions   []Function
}

// Function is one function of a trace.
type Function struct {
	Owner, App, ID string // hashes from the trace
	Trigger        string // http, timer, queue, …
	// Invocations holds the number of invocations that start in each minute;
	// its length is Trace.Minutes.
	Invocations []int
	// DurationPercentiles are execution times in ms at the percentiles
	// DurationQuantiles (the trace's percentile_Average_* columns, which are
	// percentiles of 30-second averages).
	DurationPercentiles [7]float64
	MemoryMB            float64 // average allocated memory of one instance
}

// DurationQuantiles are the quantiles of Function.DurationPercentiles.
var DurationQuantiles = [7]float64{0, 0.01, 0.25, 0.50, 0.75, 0.99, 1}

// LoadTrace reads invocations.csv, durations.csv and memory.csv from dir.
// Every function of invocations.csv must have a row in the other two files,
// matched by HashFunction.
func LoadTrace(dir string) (Trace, error) {
	inv, err := readCSV(filepath.Join(dir, "invocations.csv"))
	if err != nil {
		return Trace{}, err
	}
	dur, err := readCSV(filepath.Join(dir, "durations.csv"))
	if err != nil {
		return Trace{}, err
	}
	mem, err := readCSV(filepath.Join(dir, "memory.csv"))
	if err != nil {
		return Trace{}, err
	}

	var tr Trace
	header, rows := inv[0], inv[1:]
	if len(header) < 5 || header[2] != "HashFunction" || header[3] != "Trigger" {
		return Trace{}, fmt.Errorf("cannot read invocations.csv: header %q is not HashOwner,HashApp,HashFunction,Trigger,<minutes>", header)
	}
	tr.Minutes = len(header) - 4
	if tr.FirstMinute, err = strconv.Atoi(header[4]); err != nil {
		return Trace{}, fmt.Errorf("cannot read invocations.csv: minute column %q: %w", header[4], err)
	}

	durCols, err := columns(dur[0], "durations.csv", "HashFunction",
		"percentile_Average_0", "percentile_Average_1", "percentile_Average_25", "percentile_Average_50",
		"percentile_Average_75", "percentile_Average_99", "percentile_Average_100")
	if err != nil {
		return Trace{}, err
	}
	durations := map[string][7]float64{}
	for i, row := range dur[1:] {
		var p [7]float64
		for j := range p {
			if p[j], err = strconv.ParseFloat(row[durCols[j+1]], 64); err != nil {
				return Trace{}, fmt.Errorf("cannot read durations.csv line %d: %w", i+2, err)
			}
		}
		durations[row[durCols[0]]] = p
	}

	memCols, err := columns(mem[0], "memory.csv", "HashFunction", "AverageAllocatedMb")
	if err != nil {
		return Trace{}, err
	}
	memory := map[string]float64{}
	for i, row := range mem[1:] {
		if memory[row[memCols[0]]], err = strconv.ParseFloat(row[memCols[1]], 64); err != nil {
			return Trace{}, fmt.Errorf("cannot read memory.csv line %d: %w", i+2, err)
		}
	}

	for i, row := range rows {
		f := Function{Owner: row[0], App: row[1], ID: row[2], Trigger: row[3], Invocations: make([]int, tr.Minutes)}
		for m := range f.Invocations {
			if f.Invocations[m], err = strconv.Atoi(row[4+m]); err != nil || f.Invocations[m] < 0 {
				return Trace{}, fmt.Errorf("cannot read invocations.csv line %d: bad count %q", i+2, row[4+m])
			}
		}
		var ok bool
		if f.DurationPercentiles, ok = durations[f.ID]; !ok {
			return Trace{}, fmt.Errorf("cannot read trace: function %s has no row in durations.csv", f.ID)
		}
		if f.MemoryMB, ok = memory[f.ID]; !ok {
			return Trace{}, fmt.Errorf("cannot read trace: function %s has no row in memory.csv", f.ID)
		}
		tr.Functions = append(tr.Functions, f)
	}
	return tr, nil
}

// readCSV reads a whole CSV file with a header and at least one row; every
// row must have as many fields as the header.
func readCSV(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read trace: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.ReuseRecord = false
	var rows [][]string
	for {
		row, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", filepath.Base(path), err)
		}
		rows = append(rows, row)
	}
	if len(rows) < 2 {
		return nil, fmt.Errorf("cannot read %s: no rows", filepath.Base(path))
	}
	return rows, nil
}

// columns returns the indexes of the named columns in header.
func columns(header []string, file string, names ...string) ([]int, error) {
	idx := make([]int, len(names))
	for i, name := range names {
		idx[i] = -1
		for j, h := range header {
			if h == name {
				idx[i] = j
			}
		}
		if idx[i] < 0 {
			return nil, fmt.Errorf("cannot read %s: no column %s", file, name)
		}
	}
	return idx, nil
}
