// Package apierr writes errors at the HTTP edge in AWS Lambda's API error
// shape: {"Type":"User","Message":"…"} with the error type in the
// X-Amzn-ErrorType header, as the AWS SDKs expect.
package apierr

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/aloft-dev/aloft/internal/model"
)

// Error is an API error: an HTTP status, Lambda's error type and a message.
type Error struct {
	Status  int
	Type    string // e.g. ResourceNotFoundException
	Message string
	Reason  string // for TooManyRequestsException
}

func (e *Error) Error() string { return e.Type + ": " + e.Message }

// New returns an API error.
func New(status int, typ, msg string) *Error { return &Error{Status: status, Type: typ, Message: msg} }

// From maps an error to an API error by the sentinel it wraps.
func From(err error) *Error {
	var e *Error
	var throttled *model.ThrottledError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &throttled):
		return &Error{Status: http.StatusTooManyRequests, Type: "TooManyRequestsException",
			Message: throttled.Error(), Reason: throttled.Reason}
	case errors.Is(err, model.ErrNotFound):
		return New(http.StatusNotFound, "ResourceNotFoundException", err.Error())
	case errors.Is(err, model.ErrInvalid):
		return New(http.StatusBadRequest, "InvalidParameterValueException", err.Error())
	case errors.Is(err, model.ErrTooLarge):
		return New(http.StatusRequestEntityTooLarge, "RequestTooLargeException", err.Error())
	case errors.Is(err, model.ErrConflict):
		return New(http.StatusConflict, "ResourceConflictException", err.Error())
	case errors.Is(err, model.ErrTooManyRequests):
		return New(http.StatusTooManyRequests, "TooManyRequestsException", err.Error())
	case errors.Is(err, model.ErrUnauthorized):
		return New(http.StatusUnauthorized, "UnauthorizedException", err.Error())
	case errors.Is(err, model.ErrShuttingDown):
		return New(http.StatusServiceUnavailable, "ServiceException", err.Error())
	default:
		return New(http.StatusInternalServerError, "ServiceException", err.Error())
	}
}

// Write writes err to w in Lambda's error shape.
func Write(w http.ResponseWriter, err error) {
	e := From(err)
	body := map[string]string{"Type": "User", "Message": e.Message, "message": e.Message}
	if e.Status >= 500 {
		body["Type"] = "Service"
	}
	if e.Reason != "" {
		body["Reason"] = e.Reason
	}
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-ErrorType", e.Type)
	w.WriteHeader(e.Status)
	w.Write(b)
}
