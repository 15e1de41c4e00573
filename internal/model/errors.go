package model

import (
	"errors"
	"fmt"
)

// Sentinel errors. The HTTP edge maps each to one Lambda error type.
var (
	ErrNotFound        = errors.New("not found")         // ResourceNotFoundException, 404
	ErrInvalid         = errors.New("invalid parameter") // InvalidParameterValueException, 400
	ErrConflict        = errors.New("conflict")          // ResourceConflictException, 409
	ErrTooLarge        = errors.New("too large")         // RequestTooLargeException, 413
	ErrTooManyRequests = errors.New("too many requests") // TooManyRequestsException, 429
	ErrUnauthorized    = errors.New("unauthorized")      // 401
	ErrShuttingDown    = errors.New("node is shutting down")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Invalidf returns an error wrapping ErrInvalid with a formatted message.
func Invalidf(format string, args ...any) error { return invalidf(format, args...) }

// ThrottledError is an invocation refused for lack of concurrency or
// memory: Lambda's TooManyRequestsException with its Reason.
type ThrottledError struct {
	Reason string // e.g. ReservedFunctionConcurrentInvocationLimitExceeded
}

func (e *ThrottledError) Error() string { return "Rate Exceeded." }
func (e *ThrottledError) Unwrap() error { return ErrTooManyRequests }
