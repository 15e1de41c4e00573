package cli

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
)

const testToken = "t0ken"

// apiServer implements the parts of docs/api.md the CLI uses, to test the
// client's requests and its parsing of answers. Functions live in memory.
type apiServer struct {
	*httptest.Server
	mu       sync.Mutex
	fns      map[string]Function
	code     map[string][]byte // name -> last uploaded zip
	requests int
}

func newAPIServer(t *testing.T) *apiServer {
	t.Helper()
	s := &apiServer{fns: map[string]Function{}, code: map[string][]byte{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/functions/{name}", s.put)
	mux.HandleFunc("GET /v1/functions", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		out := struct {
			Functions []Function `json:"functions"`
		}{Functions: []Function{}}
		for _, name := range keys(s.fns) {
			out.Functions = append(out.Functions, s.fns[name])
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		if fn, ok := s.get(r.PathValue("name")); ok {
			writeJSON(w, http.StatusOK, fn)
			return
		}
		notFound(w, r.PathValue("name"))
	})
	mux.HandleFunc("DELETE /v1/functions/{name}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.fns[r.PathValue("name")]; !ok {
			notFound(w, r.PathValue("name"))
			return
		}
		delete(s.fns, r.PathValue("name"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/functions/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "START RequestId: 1 since=%s\nhello from %s\nEND RequestId: 1\n", r.URL.Query().Get("since"), r.PathValue("name"))
		if r.URL.Query().Get("follow") == "true" {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	})
	mux.HandleFunc("GET /v1/usage", func(w http.ResponseWriter, r *http.Request) {
		row := UsageRow{Function: "hello", Invocations: 10, Errors: 1, ColdStarts: 1, BilledMs: 42, GBSeconds: 0.0051, CostUSD: 0.000002085}
		u := Usage{PricePerGBSecond: 0.0000166667, PricePerMillionRequests: 0.2, Functions: []UsageRow{row}, Total: row}
		u.Total.Function = ""
		if f := r.URL.Query().Get("function"); f != "" && f != "hello" {
			u.Functions, u.Total = []UsageRow{}, UsageRow{}
		}
		writeJSON(w, http.StatusOK, u)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"version":"v9","data_dir":"/srv/aloft","isolation":{"level":"isolated","enabled":["userns","cgroups"],"missing":["seccomp"]},"driver":"process","functions":3,"instances":{"warm":1,"busy":0}}`)
	})
	mux.HandleFunc("POST /2015-03-31/functions/{name}/invocations", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := s.get(name); !ok {
			notFound(w, name)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Amz-Log-Type") == "Tail" {
			w.Header().Set("X-Amz-Log-Result", base64.StdEncoding.EncodeToString([]byte("START RequestId: 1\nREPORT RequestId: 1\n")))
		}
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
		if name == "fail" {
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			io.WriteString(w, `{"errorMessage":"boom","errorType":"Error","stackTrace":[]}`)
			return
		}
		w.Write(body) // echo
	})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			apiError(w, http.StatusUnauthorized, "UnauthorizedException", "missing or wrong bearer token")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) get(name string) (Function, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn, ok := s.fns[name]
	return fn, ok
}

func (s *apiServer) codeOf(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code[name]
}

func (s *apiServer) requestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *apiServer) put(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if r.ContentLength <= 0 {
		apiError(w, 400, "InvalidRequestContentException", "want a Content-Length")
		return
	}
	if err := r.ParseMultipartForm(1 << 20); err != nil {
		apiError(w, 400, "InvalidRequestContentException", err.Error())
		return
	}
	dec := json.NewDecoder(strings.NewReader(r.FormValue("config")))
	dec.DisallowUnknownFields()
	var cfg model.Config
	if err := dec.Decode(&cfg); err != nil {
		apiError(w, 400, "InvalidParameterValueException", "config: "+err.Error())
		return
	}
	if cfg.Name != "" && cfg.Name != name {
		apiError(w, 400, "InvalidParameterValueException", "config name differs from the path")
		return
	}
	cfg.Name = name
	if cfg.Runtime == model.RuntimeGo {
		apiError(w, 400, "InvalidParameterValueException", "runtime go is built by the CLI")
		return
	}
	norm, err := cfg.Normalize()
	if err != nil {
		apiError(w, 400, "InvalidParameterValueException", err.Error())
		return
	}
	f, _, err := r.FormFile("code")
	if err != nil {
		apiError(w, 400, "InvalidRequestContentException", "code: "+err.Error())
		return
	}
	code, _ := io.ReadAll(f)
	if _, err := zip.NewReader(bytes.NewReader(code), int64(len(code))); err != nil {
		apiError(w, 400, "InvalidParameterValueException", "code: "+err.Error())
		return
	}
	sum := sha256.Sum256(code)
	fn := Function{
		Function: model.Function{Config: norm, CodeSHA256: hex.EncodeToString(sum[:]), CodeSize: int64(len(code)),
			Version: model.DefaultVersion, LastModified: time.Date(2026, 11, 24, 11, 0, 0, 0, time.UTC)},
		ARN: model.ARN(model.DefaultRegion, model.DefaultAccountID, name),
		URL: s.URL + "/fn/" + name + "/",
	}
	s.mu.Lock()
	_, existed := s.fns[name]
	s.fns[name] = fn
	s.code[name] = code
	s.mu.Unlock()
	status := http.StatusCreated
	if existed {
		status = http.StatusOK
	}
	writeJSON(w, status, fn)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("X-Amzn-ErrorType", typ)
	writeJSON(w, status, map[string]string{"Type": "User", "Message": msg})
}

func notFound(w http.ResponseWriter, name string) {
	apiError(w, http.StatusNotFound, "ResourceNotFoundException",
		"Function not found: "+model.ARN(model.DefaultRegion, model.DefaultAccountID, name))
}
