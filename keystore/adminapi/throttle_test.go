package adminapi_test

import (
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore/adminapi"
)

// TestAdminAuthThrottle: failed admin authentications are throttled per
// client address, as failed keys are: over its budget a client gets 429
// with Retry-After instead of 401, a right token is never throttled, a
// request without a token counts for nothing, another address has a budget
// of its own, X-Forwarded-For is believed from trusted proxies only, and
// the budget refills with time.
func TestAdminAuthThrottle(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnvOn(t, mr, rdb, func(e *env, o *adminapi.Options) {
		o.Throttle = adminapi.ThrottleOptions{FailuresPerMinute: 1, Burst: 2, Now: e.clock.Now,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}}
	})
	h, clock := e.h, e.clock
	call := func(from, auth string, xff ...string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest("GET", "/v1/api_keys", nil)
		r.RemoteAddr = from + ":40000"
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		for _, v := range xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	const wrong = "Bearer kg-admin-wrong-0000000000000000000000000"
	steps := []struct {
		name, from, auth string
		xff              []string
		status           int
	}{
		{"first failure", "192.0.2.1", wrong, nil, 401},
		{"second failure", "192.0.2.1", wrong, nil, 401},
		{"over the budget", "192.0.2.1", wrong, nil, 429},
		{"still over", "192.0.2.1", "Bearer x", nil, 429},
		{"the right token passes", "192.0.2.1", "Bearer " + adminToken, nil, 200},
		{"no token is not a guess", "192.0.2.1", "", nil, 401},
		{"another address", "192.0.2.2", wrong, nil, 401},
		{"an untrusted peer's X-Forwarded-For is ignored", "192.0.2.1", wrong, []string{"198.51.100.9"}, 429},
		{"a trusted proxy names the client", "10.0.0.1", wrong, []string{"192.0.2.1"}, 429},
		{"a trusted proxy's other client", "10.0.0.1", wrong, []string{"192.0.2.3"}, 401},
	}
	for _, s := range steps {
		w := call(s.from, s.auth, s.xff...)
		if w.Code != s.status {
			t.Fatalf("%s: %d %s, want %d", s.name, w.Code, w.Body, s.status)
		}
		if s.status == 429 {
			if w.Header().Get("Retry-After") != "60" {
				t.Fatalf("%s: Retry-After %q, want 60", s.name, w.Header().Get("Retry-After"))
			}
			if got := decodeError(t, w); got.Code != "too_many_requests" {
				t.Fatalf("%s: code %q", s.name, got.Code)
			}
		}
	}
	clock.Advance(time.Minute)
	if w := call("192.0.2.1", wrong); w.Code != 401 {
		t.Fatalf("after a minute: %d, want 401 (one failure refilled)", w.Code)
	}
}
