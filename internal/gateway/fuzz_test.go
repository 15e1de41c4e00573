package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzWriteURLResult feeds arbitrary function results through a real HTTP
// server to a real client: whatever a function returns, the client gets a
// well-formed response, and the function cannot add headers it did not
// name (no CR/LF smuggling into the header block).
func FuzzWriteURLResult(f *testing.F) {
	for _, seed := range []string{
		`{"statusCode":201,"headers":{"X-A":"1"},"body":"hi"}`,
		`{"statusCode":200,"headers":{"X-A":"1\r\nSet-Cookie: evil=1"},"body":""}`,
		`{"statusCode":200,"headers":{"X-A\r\nX-Evil":"1"},"body":""}`,
		`{"statusCode":200,"headers":{"":"1"," ":"2"},"body":""}`,
		`{"statusCode":200,"cookies":["a=1\r\nX-Evil: 1"],"body":""}`,
		`{"statusCode":302,"headers":{"Location":"/x"},"body":"","isBase64Encoded":true}`,
		`{"statusCode":200,"body":"!!!","isBase64Encoded":true}`,
		`{"statusCode":99}`, `{"statusCode":1000}`, `{"statusCode":"200"}`,
		`{"statusCode":204,"body":"not allowed with 204"}`,
		`{"statusCode":200,"headers":{"Content-Length":"999"},"body":"short"}`,
		`{"statusCode":200,"headers":{"Transfer-Encoding":"chunked"},"body":"x"}`,
		`"just a string"`, `[1,2,3]`, `null`, ``, `{`,
	} {
		f.Add([]byte(seed))
	}
	var payload []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeURLResult(w, payload)
	}))
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	f.Fuzz(func(t *testing.T, p []byte) {
		payload = p // the fuzz function runs one input at a time
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatalf("result %q: the client could not read the response: %v", p, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		var res struct {
			Headers map[string]string `json:"headers"`
		}
		json.Unmarshal(p, &res)
		named := map[string]bool{}
		for k := range res.Headers {
			named[http.CanonicalHeaderKey(strings.TrimSpace(k))] = true
		}
		for k := range resp.Header {
			switch k {
			case "Content-Type", "Content-Length", "Date", "Set-Cookie", "Transfer-Encoding":
				continue
			}
			if !named[k] {
				t.Errorf("result %q: response header %q the function did not name", p, k)
			}
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 {
			t.Errorf("result %q: status %d", p, resp.StatusCode)
		}
	})
}
