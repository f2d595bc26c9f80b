package sidecar

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
)

// cannedTransport answers every round trip with a small 200 at no network
// cost, so that a benchmark measures the proxy's own work.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, Request: r, ContentLength: 11,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(strings.NewReader(`{"ok":true}`)),
	}, nil
}

// BenchmarkProxy compares one request through a bare httputil.ReverseProxy
// with one through the sidecar verifying a cached key; the upstream costs
// nothing, so the difference is the sidecar's own cost per request.
func BenchmarkProxy(b *testing.B) {
	_, rdb := redistest.Mini(b)
	store, v := keystoretest.New(b, rdb, keystore.Options{}, keystore.VerifierOptions{})
	key, err := store.Create(b.Context(), keystore.CreateParams{Name: "bench", Subject: "user_bench", Scopes: []string{"a", "b"}})
	if err != nil {
		b.Fatal(err)
	}
	up, _ := url.Parse("http://127.0.0.1:9")
	bare := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(up); pr.Out.Host = pr.In.Host; pr.SetXForwarded() },
		Transport:     cannedTransport{},
		FlushInterval: -1,
		BufferPool:    bufferPool{}, // as the sidecar's, so that only auth differs
	}
	sc, err := NewProxy(v, ProxyOptions{Upstream: up, Transport: cannedTransport{},
		RequireScopes: []string{"GET /reports/=a", "POST /reports/=b"}, Public: []string{"/public/"}})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"sidecar", sc}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest("GET", "/reports/42?x=1", nil)
					req.Header.Set("Authorization", "Bearer "+key.Secret)
					rec := httptest.NewRecorder()
					tc.h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						b.Fatalf("status %d", rec.Code)
					}
				}
			})
		})
	}
}

// BenchmarkSetIdentity measures the identity headers set on every proxied
// request, for a key whose claims hold a space inside a string.
func BenchmarkSetIdentity(b *testing.B) {
	key := &keystore.APIKey{ID: "ak_0123456789abcdef0123456789abcdef", Subject: "user_2xUq8ZtRk9vLbN3mWc4eYh7TpQs",
		Name: "deploy key", Scopes: []string{"reports:read", "reports:write"}, Claims: []byte(`{"plan":"pro","org":"Acme Inc"}`)}
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		setIdentity(h, key)
	}
	if got := h.Get(HeaderKeyClaims); got != string(key.Claims) {
		b.Fatalf("claims header %q", got)
	}
}
