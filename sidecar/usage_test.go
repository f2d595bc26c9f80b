package sidecar

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
)

// TestProxyCost charges the --cost of the route a request matches (the
// highest over every reading of its path), 1 elsewhere, and refuses with
// 429 once the credits are spent; the upstream never sees a refused
// request.
func TestProxyCost(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.create(t, keystore.CreateParams{Name: "m", Subject: "s", Credits: &keystore.Credits{Remaining: 12},
		RateLimits: []keystore.RateLimit{{Name: "default", Limit: 100, DurationMs: 60_000}}})
	up := newUpstream(t)
	u, _ := url.Parse(up.URL)
	h, err := NewProxy(e.verifier, ProxyOptions{Upstream: u, Cost: []string{"POST /reports=5", "/export/=3"}})
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(h)
	t.Cleanup(px.Close)
	steps := []struct {
		method, path string
		status       int
		left         int64
	}{
		{"GET", "/reports", 200, 11},
		{"POST", "/reports", 200, 6},
		{"POST", "/Reports;x=1", 200, 1}, // the rule holds however the upstream reads the path
		{"GET", "/EXPORT/all", 429, 1},
		{"GET", "/other", 200, 0},
		{"GET", "/other", 429, 0},
	}
	for _, st := range steps {
		hits := up.Hits()
		status, hdr, body := testkit.Do(t, px.Client(), st.method, px.URL+st.path, testkit.Bearer(k.Secret), nil)
		if status != st.status {
			t.Fatalf("%s %s: %d, want %d: %s", st.method, st.path, status, st.status, body)
		}
		if hdr.Get("RateLimit-Policy") != `"default";q=100;w=60` {
			t.Fatalf("%s %s: RateLimit-Policy %q", st.method, st.path, hdr.Get("RateLimit-Policy"))
		}
		if status == 429 {
			if code := testkit.ErrorCode(t, body); code != "api_key_usage_exceeded" {
				t.Fatalf("code %q", code)
			}
			if up.Hits() != hits {
				t.Fatal("a refused request reached the upstream")
			}
		}
		got, _ := e.store.Get(t.Context(), k.ID)
		if got.Credits.Remaining != st.left {
			t.Fatalf("%s %s: %d credits left, want %d", st.method, st.path, got.Credits.Remaining, st.left)
		}
	}
	for _, bad := range [][]string{{"/x=0"}, {"/x=abc"}, {"GET /x=1", "get /x=2"}, {"x=1"}} {
		if _, err := NewProxy(e.verifier, ProxyOptions{Upstream: u, Cost: bad}); err == nil {
			t.Errorf("--cost %q accepted", bad)
		}
	}
}

// TestForwardAuthCost reads the cost from ?cost= or X-Keygate-Cost and
// refuses a bad one with 403 (never 400, which nginx turns into a 500).
func TestForwardAuthCost(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.create(t, keystore.CreateParams{Name: "m", Subject: "s", Credits: &keystore.Credits{Remaining: 10}})
	mux := forwardAuthMux(t, e, ForwardAuthOptions{})
	steps := []struct {
		target string
		header http.Header
		status int
		left   int64
	}{
		{"/forward-auth?cost=4", testkit.Bearer(k.Secret), 200, 6},
		{"/forward-auth", with(testkit.Bearer(k.Secret), "X-Keygate-Cost", "5"), 200, 1},
		{"/forward-auth?cost=0", testkit.Bearer(k.Secret), 403, 1},
		{"/forward-auth", with(testkit.Bearer(k.Secret), "X-Keygate-Cost", "x"), 403, 1},
		{"/forward-auth?cost=2", testkit.Bearer(k.Secret), 429, 1},
		{"/forward-auth", testkit.Bearer(k.Secret), 200, 0},
	}
	for _, st := range steps {
		r := httptest.NewRequest(http.MethodGet, st.target, nil)
		r.Header = st.header
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		if rec.Code != st.status {
			t.Fatalf("%s %v: %d, want %d: %s", st.target, st.header, rec.Code, st.status, rec.Body)
		}
		got, _ := e.store.Get(t.Context(), k.ID)
		if got.Credits.Remaining != st.left {
			t.Fatalf("%s: %d credits left, want %d", st.target, got.Credits.Remaining, st.left)
		}
	}
}
