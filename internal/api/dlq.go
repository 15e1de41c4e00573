package api

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/aloft-dev/aloft/internal/apierr"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/queue"
)

// registerDLQ adds the dead-letter routes: list, show, replay and purge a
// function's failed asynchronous events.
func (a *API) registerDLQ(route func(string, func(http.ResponseWriter, *http.Request) error)) {
	route("GET /v1/functions/{name}/dlq", a.dlqList)
	route("GET /v1/functions/{name}/dlq/{id}", a.dlqShow)
	route("POST /v1/functions/{name}/dlq/replay", a.dlqReplay)
	route("DELETE /v1/functions/{name}/dlq", a.dlqPurge)
}

// dlqFunction checks the name and that the node runs a queue. Dead letters
// of a deleted function stay reachable.
func (a *API) dlqFunction(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if !model.ValidName(name) {
		return "", model.Invalidf("name %q must match [A-Za-z0-9_-]{1,64}", name)
	}
	if a.Queue == nil {
		return "", apierr.New(http.StatusNotFound, "ResourceNotFoundException", "this node runs no asynchronous queue")
	}
	return name, nil
}

func (a *API) dlqList(w http.ResponseWriter, r *http.Request) error {
	name, err := a.dlqFunction(r)
	if err != nil {
		return err
	}
	dls, err := a.Queue.DeadLetters(r.Context(), name)
	if err != nil {
		return err
	}
	if dls == nil {
		dls = []queue.DeadLetter{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"dead_letters": dls})
}

func (a *API) dlqShow(w http.ResponseWriter, r *http.Request) error {
	name, err := a.dlqFunction(r)
	if err != nil {
		return err
	}
	dl, err := a.Queue.DeadLetter(r.Context(), name, r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, dl)
}

func (a *API) dlqReplay(w http.ResponseWriter, r *http.Request) error {
	name, err := a.dlqFunction(r)
	if err != nil {
		return err
	}
	if _, err := a.Store.Function(name); err != nil {
		return apierr.New(http.StatusNotFound, "ResourceNotFoundException",
			"Function not found: "+model.ARN(a.Region, a.Account, name))
	}
	var body struct {
		IDs []string `json:"ids"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil && err != io.EOF {
		return model.Invalidf("body: %v", err)
	}
	ids, err := a.Queue.Replay(r.Context(), name, body.IDs)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"replayed": len(ids), "request_ids": ids})
}

func (a *API) dlqPurge(w http.ResponseWriter, r *http.Request) error {
	name, err := a.dlqFunction(r)
	if err != nil {
		return err
	}
	n, err := a.Queue.Purge(r.Context(), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"purged": n})
}
