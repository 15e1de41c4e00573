package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
)

func TestFrom(t *testing.T) {
	own := New(http.StatusTeapot, "TeapotException", "short and stout")
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantType   string
		wantMsg    string
		wantReason string
	}{
		{"not found", fmt.Errorf("function x: %w", model.ErrNotFound), 404, "ResourceNotFoundException", "function x: not found", ""},
		{"invalid", model.Invalidf("memory %d", 1), 400, "InvalidParameterValueException", "invalid parameter: memory 1", ""},
		{"too large", fmt.Errorf("%w: 7 MB", model.ErrTooLarge), 413, "RequestTooLargeException", "too large: 7 MB", ""},
		{"conflict", model.ErrConflict, 409, "ResourceConflictException", "conflict", ""},
		{"too many requests", model.ErrTooManyRequests, 429, "TooManyRequestsException", "too many requests", ""},
		{"throttled", &model.ThrottledError{Reason: "ReservedFunctionConcurrentInvocationLimitExceeded"}, 429, "TooManyRequestsException",
			"Rate Exceeded.", "ReservedFunctionConcurrentInvocationLimitExceeded"},
		{"wrapped throttled", fmt.Errorf("cannot invoke: %w", &model.ThrottledError{Reason: "ConcurrentInvocationLimitExceeded"}), 429,
			"TooManyRequestsException", "Rate Exceeded.", "ConcurrentInvocationLimitExceeded"},
		{"unauthorized", model.ErrUnauthorized, 401, "UnauthorizedException", "unauthorized", ""},
		{"shutting down", model.ErrShuttingDown, 503, "ServiceException", "node is shutting down", ""},
		{"unknown", errors.New("disk on fire"), 500, "ServiceException", "disk on fire", ""},
		{"api error", own, 418, "TeapotException", "short and stout", ""},
		{"wrapped api error", fmt.Errorf("ctx: %w", own), 418, "TeapotException", "short and stout", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := From(tt.err)
			if e.Status != tt.wantStatus || e.Type != tt.wantType || e.Message != tt.wantMsg || e.Reason != tt.wantReason {
				t.Errorf("From=%+v, want {%d %s %q %q}", *e, tt.wantStatus, tt.wantType, tt.wantMsg, tt.wantReason)
			}
		})
	}
	if got := own.Error(); got != "TeapotException: short and stout" {
		t.Errorf("Error()=%q", got)
	}
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantType   string
		wantBody   map[string]string
	}{
		{"user error", fmt.Errorf("function fn: %w", model.ErrNotFound), 404, "ResourceNotFoundException",
			map[string]string{"Type": "User", "Message": "function fn: not found", "message": "function fn: not found"}},
		{"throttled with reason", &model.ThrottledError{Reason: "ReservedFunctionConcurrentInvocationLimitExceeded"}, 429, "TooManyRequestsException",
			map[string]string{"Type": "User", "Message": "Rate Exceeded.", "message": "Rate Exceeded.",
				"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}},
		{"service error", errors.New("boom"), 500, "ServiceException",
			map[string]string{"Type": "Service", "Message": "boom", "message": "boom"}},
		{"shutting down", model.ErrShuttingDown, 503, "ServiceException",
			map[string]string{"Type": "Service", "Message": "node is shutting down", "message": "node is shutting down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			Write(w, tt.err)
			if w.Code != tt.wantStatus {
				t.Errorf("status=%d, want %d", w.Code, tt.wantStatus)
			}
			if got := w.Header().Get("X-Amzn-ErrorType"); got != tt.wantType {
				t.Errorf("X-Amzn-ErrorType=%q, want %q", got, tt.wantType)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type=%q, want application/json", got)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			if len(body) != len(tt.wantBody) {
				t.Errorf("body=%v, want %v", body, tt.wantBody)
			}
			for k, v := range tt.wantBody {
				if body[k] != v {
					t.Errorf("body[%s]=%q, want %q", k, body[k], v)
				}
			}
		})
	}
}
