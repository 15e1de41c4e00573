package gateway

import (
	"encoding/base64"
	"encoding/json"
	"mime"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"

	"github.com/aloft-dev/aloft/internal/apierr"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/worker"
)

// functionURL turns an HTTP request into a function-URL event (payload
// format 2.0), invokes the function and maps its result back to HTTP.
func (g *Gateway) functionURL(w http.ResponseWriter, r *http.Request) {
	fn, err := g.lookup(r.PathValue("name"))
	if err != nil {
		apierr.Write(w, err)
		return
	}
	if fn.URLAuth == model.URLAuthToken && !g.Auth.Check(r) {
		apierr.Write(w, apierr.New(http.StatusUnauthorized, "UnauthorizedException",
			"this function URL needs the bearer token (url_auth: token)"))
		return
	}
	body, err := readBody(r, model.MaxSyncPayload*3/4) // leaves room for base64 within the 6 MB event
	if err != nil {
		apierr.Write(w, err)
		return
	}
	event, err := json.Marshal(urlEvent(r, body, fn.URLAuth == model.URLAuthToken))
	if err != nil {
		apierr.Write(w, err)
		return
	}
	resp, err := g.Invoker.Invoke(r.Context(), fn, &worker.Request{Payload: event})
	if err != nil {
		apierr.Write(w, err)
		return
	}
	w.Header().Set("X-Amzn-RequestId", resp.RequestID)
	if resp.FunctionError != "" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amzn-ErrorType", "FunctionError")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte(`{"Message":"Internal Server Error"}`))
		return
	}
	writeURLResult(w, resp.Payload)
}

// urlEvent builds the event. With stripAuth (url_auth: token) the admin
// token is not passed on; otherwise the function sees every header, its own
// Authorization included, as with Lambda's auth type NONE. Cookies travel in
// the event's cookies field, as the client sent them.
func urlEvent(r *http.Request, body []byte, stripAuth bool) *events.LambdaFunctionURLRequest {
	path := "/" + r.PathValue("path")
	raw := "/"
	// rawPath keeps the client's escaping: what follows /fn/{name}.
	if _, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.EscapedPath(), "/fn/"), "/"); ok {
		raw += rest
	}
	headers := make(map[string]string, len(r.Header)+1)
	for k, v := range r.Header {
		if (stripAuth && strings.EqualFold(k, "Authorization")) || strings.EqualFold(k, "Cookie") {
			continue
		}
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	headers["host"] = r.Host
	var query map[string]string
	if q := r.URL.Query(); len(q) > 0 {
		query = make(map[string]string, len(q))
		for k, v := range q {
			query[k] = strings.Join(v, ",")
		}
	}
	var cookies []string
	for _, line := range r.Header.Values("Cookie") {
		for _, c := range strings.Split(line, ";") {
			if c = strings.TrimSpace(c); c != "" {
				cookies = append(cookies, c)
			}
		}
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	now := time.Now().UTC()
	reqID := worker.NewRequestID()
	ev := &events.LambdaFunctionURLRequest{
		Version:               "2.0",
		RawPath:               raw,
		RawQueryString:        r.URL.RawQuery,
		Cookies:               cookies,
		Headers:               headers,
		QueryStringParameters: query,
		RequestContext: events.LambdaFunctionURLRequestContext{
			AccountID:    "anonymous",
			RequestID:    reqID,
			APIID:        r.PathValue("name"),
			DomainName:   r.Host,
			DomainPrefix: r.PathValue("name"),
			Time:         now.Format("02/Jan/2006:15:04:05 -0700"),
			TimeEpoch:    now.UnixMilli(),
			HTTP: events.LambdaFunctionURLRequestContextHTTPDescription{
				Method:    r.Method,
				Path:      path,
				Protocol:  r.Proto,
				SourceIP:  ip,
				UserAgent: r.UserAgent(),
			},
		},
	}
	if len(body) > 0 {
		if isText(r.Header.Get("Content-Type"), body) {
			ev.Body = string(body)
		} else {
			ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(body), true
		}
	}
	return ev
}

// isText reports whether a body can travel as a JSON string unchanged.
func isText(contentType string, body []byte) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/octet-stream", strings.HasPrefix(mt, "image/"),
		strings.HasPrefix(mt, "audio/"), strings.HasPrefix(mt, "video/"),
		mt == "application/zip", mt == "application/pdf", mt == "application/gzip":
		return false
	}
	return utf8.Valid(body)
}

// urlResult is the structured result a function URL's function may return.
type urlResult struct {
	StatusCode      int               `json:"statusCode"`
	Headers         map[string]string `json:"headers"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
	Cookies         []string          `json:"cookies"`
}

// framingHeaders belong to the connection and the response's framing, which
// the server manages: a function's value for one is dropped (one such value,
// Transfer-Encoding: 0, made a response no client could read).
var framingHeaders = map[string]bool{
	"Connection": true, "Content-Length": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// writeURLResult maps a function's result to HTTP: an object with a
// statusCode is a structured response; anything else is a 200 JSON body.
func writeURLResult(w http.ResponseWriter, payload []byte) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(payload, &probe) == nil && probe["statusCode"] != nil {
		var res urlResult
		// A 1xx status cannot end a response; like any status outside
		// 200–999 it makes the result a bare value.
		if err := json.Unmarshal(payload, &res); err == nil && res.StatusCode >= 200 && res.StatusCode <= 999 {
			body := []byte(res.Body)
			if res.IsBase64Encoded {
				if body, err = base64.StdEncoding.DecodeString(res.Body); err != nil {
					w.WriteHeader(http.StatusBadGateway)
					w.Write([]byte(`{"Message":"the function returned a body that is not valid base64"}`))
					return
				}
			}
			keys := make([]string, 0, len(res.Headers))
			for k := range res.Headers {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if !framingHeaders[http.CanonicalHeaderKey(k)] {
					w.Header().Set(k, res.Headers[k])
				}
			}
			for _, c := range res.Cookies {
				w.Header().Add("Set-Cookie", c)
			}
			if w.Header().Get("Content-Type") == "" {
				w.Header().Set("Content-Type", "application/json")
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(res.StatusCode)
			w.Write(body)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(payload)
}
