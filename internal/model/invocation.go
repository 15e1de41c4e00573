package model

import "time"

// FunctionError is the body Lambda returns (and a runtime posts) for a
// failed invocation.
type FunctionError struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType,omitempty"`
	StackTrace   []string `json:"stackTrace,omitempty"`
}

// Error types the platform itself produces, as Lambda names them.
const (
	ErrTypeTimeout      = "Sandbox.Timedout"
	ErrTypeExit         = "Runtime.ExitError"
	ErrTypeOutOfMemory  = "Runtime.OutOfMemory"
	ErrTypeTooLarge     = "Function.ResponseSizeTooLarge"
	ErrTypeUnknown      = "Runtime.Unknown"
	ErrTypeInvalidEntry = "Runtime.InvalidEntrypoint"
)

// Usage is the metering record of one invocation.
type Usage struct {
	Time           time.Time `json:"time"`
	Function       string    `json:"function"`
	RequestID      string    `json:"request_id"`
	DurationMs     float64   `json:"duration_ms"`
	BilledMs       int64     `json:"billed_ms"`
	MemoryMB       int       `json:"memory_mb"`
	MaxMemoryMB    int       `json:"max_memory_mb"`
	GBSeconds      float64   `json:"gb_seconds"`
	Cold           bool      `json:"cold"`
	InitDurationMs float64   `json:"init_duration_ms,omitempty"`
	Outcome        string    `json:"outcome"` // success, error, timeout, crash, oom, throttled
	// Provisioned: served by a provisioned-concurrency instance.
	Provisioned bool `json:"provisioned,omitempty"`
	// Pooled: a cold start served by a pre-started interpreter; its
	// InitDurationMs runs from specialisation to the runtime's first /next.
	Pooled bool `json:"pooled,omitempty"`
	// Attempt numbers the tries of an asynchronous invocation (1 = first);
	// 0 means a synchronous one.
	Attempt int `json:"attempt,omitempty"`
}

// Outcomes of an invocation, as recorded in Usage.Outcome.
const (
	OutcomeSuccess   = "success"
	OutcomeError     = "error"   // the function returned an error
	OutcomeTimeout   = "timeout" // killed at its deadline
	OutcomeCrash     = "crash"   // the runtime exited or failed to init
	OutcomeOOM       = "oom"
	OutcomeThrottled = "throttled" // refused for lack of concurrency or memory; not billed
)

// GBSeconds is the billed compute of one invocation.
func GBSeconds(billedMs int64, memoryMB int) float64 {
	return float64(billedMs) / 1000 * float64(memoryMB) / 1024
}
