package scheduler

import (
	"reflect"
	"testing"
	"time"
)

func TestAdmit(t *testing.T) {
	t0 := time.Unix(1000, 0)
	idle := []Candidate{
		{MemoryMB: 128, LastUsed: t0.Add(3 * time.Second)},
		{MemoryMB: 256, LastUsed: t0.Add(1 * time.Second)}, // least recently used
		{MemoryMB: 128, LastUsed: t0.Add(2 * time.Second)},
	}
	cases := []struct {
		name string
		cap  Capacity
		dem  Demand
		idle []Candidate
		want Admission
	}{
		{"fits", Capacity{BudgetMB: 1024, SharedUsedMB: 512}, Demand{MemoryMB: 128, Reserved: -1}, nil,
			Admission{Start: true}},
		{"exactly fits", Capacity{BudgetMB: 1024, SharedUsedMB: 896}, Demand{MemoryMB: 128, Reserved: -1}, nil,
			Admission{Start: true}},
		{"evicts least recently used first", Capacity{BudgetMB: 1024, SharedUsedMB: 1024}, Demand{MemoryMB: 128, Reserved: -1}, idle,
			Admission{Start: true, Evict: []int{1}}},
		{"evicts several", Capacity{BudgetMB: 1024, SharedUsedMB: 1024}, Demand{MemoryMB: 384, Reserved: -1}, idle,
			Admission{Start: true, Evict: []int{1, 2}}},
		{"nothing to evict: wait", Capacity{BudgetMB: 1024, SharedUsedMB: 1024}, Demand{MemoryMB: 128, Reserved: -1}, nil,
			Admission{Reason: ReasonConcurrentLimit}},
		{"evicting all is not enough: wait", Capacity{BudgetMB: 1024, SharedUsedMB: 1024}, Demand{MemoryMB: 1024, Reserved: -1}, idle,
			Admission{Reason: ReasonConcurrentLimit}},
		{"reservations shrink the shared memory", Capacity{BudgetMB: 1024, ReservedMB: 512, SharedUsedMB: 384}, Demand{MemoryMB: 256, Reserved: -1}, nil,
			Admission{Reason: ReasonConcurrentLimit}},
		{"larger than the shared memory: never", Capacity{BudgetMB: 1024, ReservedMB: 512}, Demand{MemoryMB: 1024, Reserved: -1}, nil,
			Admission{Reason: ReasonConcurrentLimit, Never: true}},
		{"reserved 0 disables the function", Capacity{BudgetMB: 1024}, Demand{MemoryMB: 128, Reserved: 0}, nil,
			Admission{Reason: ReasonReservedLimit, Never: true}},
		{"under its reservation: starts even when shared memory is full", Capacity{BudgetMB: 1024, ReservedMB: 256, SharedUsedMB: 768}, Demand{MemoryMB: 128, Reserved: 2, Instances: 1}, nil,
			Admission{Start: true}},
		{"at its reservation: wait", Capacity{BudgetMB: 1024, ReservedMB: 256}, Demand{MemoryMB: 128, Reserved: 2, Instances: 2}, idle,
			Admission{Reason: ReasonReservedLimit}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Admit(c.cap, c.dem, c.idle)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("Admit = %+v, want %+v", got, c.want)
			}
		})
	}
}
