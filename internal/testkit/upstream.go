package testkit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Seen is one request as an [Upstream] received it.
type Seen struct {
	Method   string
	Host     string
	Path     string
	RawQuery string
	Header   http.Header
	BodySum  string // hex SHA-256 of the body, when the handler read it
	BodyLen  int64
}

// Upstream is a test application behind a proxy: it records each request
// that reaches it. It is closed at the test's cleanup.
type Upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []Seen
}

// NewUpstream starts an Upstream. Each of routes (a [http.ServeMux]
// pattern and its handler) answers its paths and records what it means to
// with [Upstream.Record]; every other path is recorded and answered 200
// "upstream ok".
func NewUpstream(t testing.TB, routes map[string]http.HandlerFunc) *Upstream {
	t.Helper()
	u := &Upstream{}
	mux := http.NewServeMux()
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	if _, ok := routes["/"]; !ok {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			u.Record(r, "", 0)
			io.WriteString(w, "upstream ok")
		})
	}
	u.Server = httptest.NewServer(mux)
	t.Cleanup(u.Close)
	return u
}

// Record adds r to what the upstream saw, with the SHA-256 and the length
// of its body when the handler read it.
func (u *Upstream) Record(r *http.Request, bodySum string, bodyLen int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reqs = append(u.reqs, Seen{Method: r.Method, Host: r.Host, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Header: r.Header.Clone(), BodySum: bodySum, BodyLen: bodyLen})
}

// Hits is how many requests reached the upstream.
func (u *Upstream) Hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// Last returns the last request the upstream saw; it fails the test when
// there is none.
func (u *Upstream) Last(t testing.TB) Seen {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("the upstream saw no request")
	}
	return u.reqs[len(u.reqs)-1]
}
