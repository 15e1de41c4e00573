// Package gateway serves the invoke paths: the Lambda Invoke API and
// function URLs. It authenticates, validates the request, looks the
// function up and hands the invocation to the worker.
package gateway

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/aloft-dev/aloft/internal/apierr"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/worker"
)

// Functions looks functions up.
type Functions interface {
	Function(name string) (*model.Function, error)
}

// Invoker runs invocations.
type Invoker interface {
	Invoke(ctx context.Context, fn *model.Function, req *worker.Request) (*worker.Response, error)
}

// Enqueuer stores Event (asynchronous) invocations durably and returns
// their request id. A payload over its limit is an error wrapping
// model.ErrTooLarge.
type Enqueuer interface {
	Enqueue(ctx context.Context, fn *model.Function, req *worker.Request) (string, error)
}

// Gateway serves the invoke paths. Set the fields, then use Register.
type Gateway struct {
	Functions Functions
	Invoker   Invoker
	Enqueuer  Enqueuer // nil: Event invocations are refused
	Auth      *Auth
	Region    string
	Account   string
}

// Register adds the gateway's routes to mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	mux.Handle("POST /2015-03-31/functions/{name}/invocations", g.Auth.Require(http.HandlerFunc(g.invoke)))
	mux.HandleFunc("/fn/{name}", g.functionURL)
	mux.HandleFunc("/fn/{name}/{path...}", g.functionURL)
}

// Auth checks the admin bearer token.
type Auth struct{ Token string }

// Check reports whether r carries the admin token.
func (a *Auth) Check(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.Token)) == 1
}

// Require wraps h so it answers 401 without the admin token.
func (a *Auth) Require(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.Check(r) {
			apierr.Write(w, apierr.New(http.StatusUnauthorized, "UnauthorizedException",
				"missing or invalid bearer token (Authorization: Bearer <token>)"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// readBody reads at most limit bytes of the request body; a larger body is
// a 413 in Lambda's shape.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, apierr.New(http.StatusBadRequest, "InvalidRequestContentException", "cannot read the request body: "+err.Error())
	}
	if int64(len(body)) > limit {
		return nil, apierr.New(http.StatusRequestEntityTooLarge, "RequestTooLargeException",
			fmt.Sprintf("Request must be smaller than %d bytes for the InvokeFunction operation", limit))
	}
	return body, nil
}

func (g *Gateway) lookup(name string) (*model.Function, error) {
	fn, err := g.Functions.Function(name)
	if err != nil {
		return nil, apierr.New(http.StatusNotFound, "ResourceNotFoundException",
			"Function not found: "+model.ARN(g.Region, g.Account, name))
	}
	return fn, nil
}

// maxClientContext is Lambda's bound on X-Amz-Client-Context, base64
// included; the function receives it in a Runtime API header.
const maxClientContext = 3583

// invoke serves the Lambda Invoke API.
func (g *Gateway) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// The SDKs may send the full ARN or a partial one as the name.
	if i := strings.LastIndex(name, ":function:"); i >= 0 {
		name = name[i+len(":function:"):]
	}
	if q := r.URL.Query().Get("Qualifier"); q != "" && q != model.DefaultVersion {
		apierr.Write(w, apierr.New(http.StatusNotFound, "ResourceNotFoundException",
			"Function not found: "+model.ARN(g.Region, g.Account, name)+":"+q))
		return
	}
	fn, err := g.lookup(name)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	payload, err := readBody(r, model.MaxSyncPayload)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = []byte("{}")
	} else if !json.Valid(payload) {
		apierr.Write(w, apierr.New(http.StatusBadRequest, "InvalidRequestContentException",
			"Could not parse request body into json: the payload is not valid JSON"))
		return
	}
	req := &worker.Request{Payload: payload, WantLog: r.Header.Get("X-Amz-Log-Type") == "Tail"}
	if cc := r.Header.Get("X-Amz-Client-Context"); cc != "" {
		if len(cc) > maxClientContext {
			apierr.Write(w, apierr.New(http.StatusBadRequest, "InvalidRequestContentException",
				fmt.Sprintf("X-Amz-Client-Context is %d bytes, more than %d", len(cc), maxClientContext)))
			return
		}
		raw, err := base64.StdEncoding.DecodeString(cc)
		var object map[string]json.RawMessage
		if err != nil || json.Unmarshal(raw, &object) != nil || object == nil {
			apierr.Write(w, apierr.New(http.StatusBadRequest, "InvalidRequestContentException",
				"X-Amz-Client-Context must be a base64-encoded JSON object"))
			return
		}
		req.ClientContext = string(raw)
	}
	switch typ := r.Header.Get("X-Amz-Invocation-Type"); typ {
	case "", "RequestResponse":
	case "DryRun":
		w.Header().Set("X-Amz-Executed-Version", model.DefaultVersion)
		w.WriteHeader(http.StatusNoContent)
		return
	case "Event":
		if g.Enqueuer != nil {
			g.enqueue(w, r, fn, req)
			return
		}
		fallthrough
	default:
		apierr.Write(w, apierr.New(http.StatusBadRequest, "InvalidParameterValueException",
			"X-Amz-Invocation-Type "+typ+" is not supported; use RequestResponse or DryRun"))
		return
	}

	resp, err := g.Invoker.Invoke(r.Context(), fn, req)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Amzn-RequestId", resp.RequestID)
	h.Set("X-Amz-Executed-Version", resp.Version)
	if resp.FunctionError != "" {
		h.Set("X-Amz-Function-Error", resp.FunctionError)
	}
	if r.Header.Get("X-Amz-Log-Type") == "Tail" {
		h.Set("X-Amz-Log-Result", base64.StdEncoding.EncodeToString(resp.LogTail()))
	}
	w.WriteHeader(http.StatusOK)
	w.Write(resp.Payload)
}

// enqueue answers an Event invocation: 202 with the request id once the
// event is stored durably.
func (g *Gateway) enqueue(w http.ResponseWriter, r *http.Request, fn *model.Function, req *worker.Request) {
	id, err := g.Enqueuer.Enqueue(r.Context(), fn, req)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	h := w.Header()
	h.Set("X-Amzn-RequestId", id)
	h.Set("X-Amz-Executed-Version", model.DefaultVersion)
	w.WriteHeader(http.StatusAccepted)
}
