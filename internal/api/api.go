// Package api serves Aloft's native control-plane API under /v1 (see
// docs/api.md): deploy, list, inspect and remove functions, read their logs
// and usage, and the node's status.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/aloft-dev/aloft/internal/apierr"
	"github.com/aloft-dev/aloft/internal/bundle"
	"github.com/aloft-dev/aloft/internal/metering"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/queue"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/store"
	"github.com/aloft-dev/aloft/internal/triggers"
	"github.com/aloft-dev/aloft/internal/worker"
)

// API serves /v1. Set the fields, then Register.
type API struct {
	Store     *store.Store
	Code      *bundle.Cache
	Worker    *worker.Worker
	Queue     *queue.Queue // asynchronous invocations; nil: none
	Usage     *metering.Aggregator
	Prices    metering.Prices
	Isolation sandbox.Isolation
	Driver    string
	DataDir   string
	Version   string
	Region    string
	Account   string
	// BaseURL is the node's external URL, for function URLs in answers.
	BaseURL string
}

// Register adds the /v1 routes to mux, each behind require (the admin
// token check).
func (a *API) Register(mux *http.ServeMux, require func(http.Handler) http.Handler) {
	route := func(pattern string, h func(http.ResponseWriter, *http.Request) error) {
		mux.Handle(pattern, require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := h(w, r); err != nil {
				apierr.Write(w, err)
			}
		})))
	}
	route("GET /v1/functions", a.list)
	route("GET /v1/functions/{name}", a.get)
	route("PUT /v1/functions/{name}", a.deploy)
	route("DELETE /v1/functions/{name}", a.remove)
	route("GET /v1/functions/{name}/logs", a.logs)
	route("GET /v1/usage", a.usage)
	route("GET /v1/status", a.status)
	a.registerDLQ(route)
	route("/v1/", func(w http.ResponseWriter, r *http.Request) error {
		return apierr.New(http.StatusNotFound, "ResourceNotFoundException", "no such API: "+r.Method+" "+r.URL.Path)
	})
}

// FunctionView is a function as the API shows it.
type FunctionView struct {
	*model.Function
	ARN       string        `json:"arn"`
	URL       string        `json:"url"`
	Instances worker.Counts `json:"instances"`
	// Queue is the function's asynchronous queue: depth, age of the
	// oldest event and dead letters.
	Queue *queue.Depth `json:"queue,omitempty"`
}

func (a *API) view(fn *model.Function) FunctionView {
	v := FunctionView{
		Function:  fn,
		ARN:       model.ARN(a.Region, a.Account, fn.Name),
		URL:       a.BaseURL + "/fn/" + fn.Name + "/",
		Instances: a.Worker.Instances(fn.Name),
	}
	if a.Queue != nil {
		if d, err := a.Queue.Depth(context.Background(), fn.Name, time.Now()); err == nil {
			v.Queue = &d
		}
	}
	return v
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

func (a *API) list(w http.ResponseWriter, r *http.Request) error {
	fns := a.Store.Functions()
	out := make([]FunctionView, len(fns))
	for i, fn := range fns {
		out[i] = a.view(fn)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"functions": out})
}

func (a *API) function(name string) (*model.Function, error) {
	fn, err := a.Store.Function(name)
	if err != nil {
		return nil, apierr.New(http.StatusNotFound, "ResourceNotFoundException",
			"Function not found: "+model.ARN(a.Region, a.Account, name))
	}
	return fn, nil
}

func (a *API) get(w http.ResponseWriter, r *http.Request) error {
	fn, err := a.function(r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.view(fn))
}

// maxDeployBody bounds a deploy request: the zip limit plus room for the
// config part and multipart framing.
const maxDeployBody = bundle.MaxZipped + 1<<20

func (a *API) deploy(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if !model.ValidName(name) {
		return model.Invalidf("name %q must match [A-Za-z0-9_-]{1,64}", name)
	}
	cfg, code, err := readDeploy(w, r)
	if err != nil {
		return err
	}
	if cfg.Name == "" {
		cfg.Name = name
	}
	if cfg.Name != name {
		return model.Invalidf("the config names %q but the URL names %q", cfg.Name, name)
	}
	if cfg.Runtime == model.RuntimeGo {
		return model.Invalidf("runtime go is built by the CLI (aloft deploy) and deployed as runtime provided")
	}
	cfg, err = cfg.Normalize()
	if err != nil {
		return err
	}
	if err := triggers.Validate(cfg.Triggers); err != nil {
		return err
	}
	if err := a.Worker.CheckReservation(cfg); err != nil {
		return err
	}
	info, err := bundle.Validate(code, cfg.Runtime)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if err := a.Code.Add(info.SHA256, code, cfg.Runtime); err != nil {
		return fmt.Errorf("cannot unpack the bundle: %w", err)
	}
	if err := a.Store.PutCode(ctx, info.SHA256, code); err != nil {
		return err
	}
	_, lookupErr := a.Store.Function(name)
	fn := &model.Function{
		Config: cfg, CodeSHA256: info.SHA256, CodeSize: info.Size,
		Version: model.DefaultVersion, LastModified: time.Now().UTC(),
	}
	if err := a.Store.PutFunction(ctx, fn); err != nil {
		return err
	}
	status := http.StatusCreated
	if lookupErr == nil { // an update
		status = http.StatusOK
	}
	return writeJSON(w, status, a.view(fn))
}

// readDeploy reads the multipart deploy body: a "config" JSON part with no
// unknown keys and a "code" zip part.
func readDeploy(w http.ResponseWriter, r *http.Request) (model.Config, []byte, error) {
	var cfg model.Config
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return cfg, nil, apierr.New(http.StatusBadRequest, "InvalidRequestContentException",
			"the deploy body must be multipart/form-data with a config part and a code part")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxDeployBody)
	mr, err := r.MultipartReader()
	if err != nil {
		return cfg, nil, apierr.New(http.StatusBadRequest, "InvalidRequestContentException", err.Error())
	}
	var code []byte
	haveConfig := false
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return cfg, nil, bodyError(err)
		}
		switch part.FormName() {
		case "config":
			dec := json.NewDecoder(io.LimitReader(part, 1<<20))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&cfg); err != nil {
				return cfg, nil, model.Invalidf("config: %v", err)
			}
			haveConfig = true
		case "code":
			if code, err = io.ReadAll(part); err != nil {
				return cfg, nil, bodyError(err)
			}
		default:
			return cfg, nil, model.Invalidf("unknown part %q (want config and code)", part.FormName())
		}
		part.Close()
	}
	if !haveConfig {
		return cfg, nil, model.Invalidf("the config part is missing")
	}
	if code == nil {
		return cfg, nil, model.Invalidf("the code part is missing")
	}
	return cfg, code, nil
}

func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("%w: the deploy body is over %d bytes", model.ErrTooLarge, mbe.Limit)
	}
	return apierr.New(http.StatusBadRequest, "InvalidRequestContentException", "cannot read the deploy body: "+err.Error())
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) error {
	fn, err := a.function(r.PathValue("name"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	if err := a.Store.DeleteFunction(ctx, fn.Name); err != nil {
		return err
	}
	if !a.codeInUse(fn.CodeSHA256) {
		if err := a.Store.DeleteCode(ctx, fn.CodeSHA256); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) codeInUse(sha string) bool {
	for _, fn := range a.Store.Functions() {
		if fn.CodeSHA256 == sha {
			return true
		}
	}
	return false
}

func (a *API) logs(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if !model.ValidName(name) {
		return model.Invalidf("name %q must match [A-Za-z0-9_-]{1,64}", name)
	}
	q := r.URL.Query()
	since, err := parseSince(q.Get("since"), time.Now())
	if err != nil {
		return err
	}
	follow := q.Get("follow") == "true" || q.Get("follow") == "1"
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	flusher, _ := w.(http.Flusher)
	wrote := false
	err = a.Store.Logs(r.Context(), name, since, follow, func(text []byte) error {
		wrote = true
		if _, err := w.Write(text); err != nil {
			return err
		}
		if follow && flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if err != nil && !wrote && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// parseSince accepts a Go duration back from now or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, model.Invalidf("since %q is neither a duration (10m) nor an RFC 3339 time", s)
}

func (a *API) usage(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("function")
	if name != "" && !model.ValidName(name) {
		return model.Invalidf("function %q must match [A-Za-z0-9_-]{1,64}", name)
	}
	return writeJSON(w, http.StatusOK, a.Usage.Report(name, a.Prices))
}

func (a *API) status(w http.ResponseWriter, r *http.Request) error {
	var total worker.Counts
	fns := a.Store.Functions()
	for _, fn := range fns {
		c := a.Worker.Instances(fn.Name)
		total.Warm += c.Warm
		total.Busy += c.Busy
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"version": a.Version, "data_dir": a.DataDir, "driver": a.Driver,
		"isolation": a.Isolation, "functions": len(fns), "instances": total,
	})
}
