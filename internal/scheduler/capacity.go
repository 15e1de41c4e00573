package scheduler

import (
	"sort"
	"time"
)

// Throttle reasons, as Lambda names them in a TooManyRequestsException.
const (
	ReasonReservedLimit   = "ReservedFunctionConcurrentInvocationLimitExceeded"
	ReasonConcurrentLimit = "ConcurrentInvocationLimitExceeded"
)

// Capacity is the node's memory budget as admission sees it. Functions with
// reserved concurrency hold back reserved × memory of the budget for
// themselves; every other function shares the rest.
type Capacity struct {
	BudgetMB     int // the node's memory budget for instances
	ReservedMB   int // held back by reservations, summed over functions
	SharedUsedMB int // held by live instances of functions without a reservation
}

// Demand is a function asking for one more instance.
type Demand struct {
	MemoryMB  int
	Reserved  int // reserved concurrency; -1 when the function has none
	Instances int // the function's live instances, including starting ones
}

// Candidate is an idle instance that may be evicted to make room: one of a
// function without a reservation and without provisioned concurrency.
type Candidate struct {
	MemoryMB int
	LastUsed time.Time
}

// Admission is the decision for a Demand.
type Admission struct {
	Start bool  // start the instance now
	Evict []int // first stop these candidates (indexes), least recently used first
	// Reason says why the instance cannot start now; the caller may wait for
	// capacity to free up, unless Never.
	Reason string
	Never  bool // waiting cannot help: throttle at once
}

// Admit decides whether an instance may start, evicting idle instances of
// other functions (least recently used first) when the shared memory is
// full. It is a pure function of its arguments.
func Admit(c Capacity, d Demand, idle []Candidate) Admission {
	switch {
	case d.Reserved == 0:
		return Admission{Reason: ReasonReservedLimit, Never: true}
	case d.Reserved > 0:
		// The reservation holds the memory back: only the cap limits it.
		if d.Instances < d.Reserved {
			return Admission{Start: true}
		}
		return Admission{Reason: ReasonReservedLimit}
	}
	shared := c.BudgetMB - c.ReservedMB
	if d.MemoryMB > shared {
		return Admission{Reason: ReasonConcurrentLimit, Never: true}
	}
	free := shared - c.SharedUsedMB
	if free >= d.MemoryMB {
		return Admission{Start: true}
	}
	order := make([]int, len(idle))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return idle[order[a]].LastUsed.Before(idle[order[b]].LastUsed) })
	var evict []int
	for _, i := range order {
		evict = append(evict, i)
		free += idle[i].MemoryMB
		if free >= d.MemoryMB {
			return Admission{Start: true, Evict: evict}
		}
	}
	return Admission{Reason: ReasonConcurrentLimit}
}
