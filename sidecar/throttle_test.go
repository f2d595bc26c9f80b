package sidecar

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
)

// throttled sends one request from remote to h and returns the recorder.
func throttled(h http.Handler, target, remote string, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", target, nil)
	req.RemoteAddr = remote
	for k, vs := range header {
		req.Header[k] = vs
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestProxyThrottlesFailuresPerClient(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	up := newUpstream(t)
	u, _ := url.Parse(up.URL)
	h, err := NewProxy(e.verifier, ProxyOptions{
		Upstream:   u,
		Registerer: e.reg,
		Throttle:   ThrottleOptions{FailuresPerMinute: 60, Burst: 3, Now: e.clock.Now},
	})
	if err != nil {
		t.Fatal(err)
	}
	const attacker, neighbour = "192.0.2.66:4000", "192.0.2.7:4000"
	bad := []string{k.revoked.Secret, k.deleted.Secret, "ak_garbage", k.expired.Secret}
	for i := range 3 {
		if rec := throttled(h, "/x", attacker, testkit.Bearer(bad[i])); rec.Code != 401 {
			t.Fatalf("failure %d within the burst: %d, want 401", i+1, rec.Code)
		}
	}
	rec := throttled(h, "/x", attacker, testkit.Bearer(bad[3]))
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("failure over the budget: %d %v, want 429 with Retry-After: 1 and JSON", rec.Code, rec.Header())
	}
	if code := testkit.ErrorCode(t, rec.Body.Bytes()); code != "too_many_requests" {
		t.Fatalf("code %q, want too_many_requests", code)
	}
	// What a throttled client cannot do: learn the outcome of its next
	// guesses, spoof its way out, or spend another client's budget.
	if rec := throttled(h, "/x", attacker, with(testkit.Bearer(k.revoked.Secret), "X-Forwarded-For", "198.51.100.1")); rec.Code != 429 {
		t.Fatalf("X-Forwarded-For from an untrusted peer changed the client: %d", rec.Code)
	}
	if rec := throttled(h, "/x", neighbour, testkit.Bearer(k.revoked.Secret)); rec.Code != 401 {
		t.Fatalf("another address was throttled: %d", rec.Code)
	}
	// What it still gets: a valid key always goes through; a request
	// without a key, a missing scope and an outage are never counted or
	// throttled.
	before := up.Hits()
	if rec := throttled(h, "/x", attacker, testkit.Bearer(k.full.Secret)); rec.Code != 200 || up.Hits() != before+1 {
		t.Fatalf("a valid key from a throttled address: %d, want 200 from the upstream", rec.Code)
	}
	if rec := throttled(h, "/x", attacker, nil); rec.Code != 401 {
		t.Fatalf("no key from a throttled address: %d, want 401", rec.Code)
	}
	e.clock.Advance(time.Second)
	if rec := throttled(h, "/x", attacker, testkit.Bearer(k.revoked.Secret)); rec.Code != 401 {
		t.Fatalf("after one refill: %d, want one more 401", rec.Code)
	}
	if rec := throttled(h, "/x", attacker, testkit.Bearer(k.revoked.Secret)); rec.Code != 429 {
		t.Fatalf("after the refill was spent: %d, want 429", rec.Code)
	}
	if got := testkit.MetricValue(t, e.reg, "keygate_proxy_requests_total", map[string]string{"code": "429"}); got != 3 {
		t.Fatalf("keygate_proxy_requests_total{code=429} = %v, want 3", got)
	}
	mr.Close()
	if rec := throttled(h, "/x", attacker, testkit.Bearer(k.revoked.Secret)); rec.Code != 503 {
		t.Fatalf("store down, throttled client: %d, want 503 (an outage is never a 429)", rec.Code)
	}
}

func TestProxyThrottleTrustsOnlyConfiguredProxies(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	up := newUpstream(t)
	u, _ := url.Parse(up.URL)
	h, err := NewProxy(e.verifier, ProxyOptions{
		Upstream: u,
		Throttle: ThrottleOptions{FailuresPerMinute: 1, Burst: 1, Now: e.clock.Now,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	const lb = "10.0.0.2:5000"
	fail := func(remote, xff string) int {
		hd := testkit.Bearer(k.revoked.Secret)
		if xff != "" {
			hd = with(hd, "X-Forwarded-For", xff)
		}
		return throttled(h, "/x", remote, hd).Code
	}
	if fail(lb, "198.51.100.1") != 401 || fail(lb, "198.51.100.1") != 429 {
		t.Fatal("the client behind the load balancer was not throttled on its second failure")
	}
	if got := fail(lb, "198.51.100.2"); got != 401 {
		t.Fatalf("a second client behind the same load balancer: %d, want 401 (its own budget)", got)
	}
	if got := fail(lb, "198.51.100.2, 10.0.0.3"); got != 429 {
		t.Fatalf("the same client through two trusted hops: %d, want 429", got)
	}
	if got := fail(lb, "198.51.100.1, 198.51.100.3"); got != 401 {
		t.Fatalf("the rightmost untrusted hop is the client, not what it claims further left: %d", got)
	}
}

func TestForwardAuthThrottleNeedsTrustedProxies(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	limits := ThrottleOptions{FailuresPerMinute: 1, Burst: 1, Now: e.clock.Now}
	off := forwardAuthMux(t, e, ForwardAuthOptions{Throttle: limits})
	for i := range 5 {
		if rec := throttled(off, "/forward-auth", "127.0.0.1:9", testkit.Bearer(k.revoked.Secret)); rec.Code != 401 {
			t.Fatalf("without trusted proxies, failure %d: %d, want 401 (throttling off)", i+1, rec.Code)
		}
	}
	limits.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	on := forwardAuthMux(t, e, ForwardAuthOptions{Throttle: limits})
	fail := func(xff string) *httptest.ResponseRecorder {
		return throttled(on, "/forward-auth", "127.0.0.1:9", with(testkit.Bearer(k.revoked.Secret), "X-Forwarded-For", xff))
	}
	if rec := fail("198.51.100.1"); rec.Code != 401 {
		t.Fatalf("first failure: %d", rec.Code)
	}
	rec := fail("198.51.100.1")
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "60" || testkit.ErrorCode(t, rec.Body.Bytes()) != "too_many_requests" {
		t.Fatalf("second failure of one client: %d %v %s, want 429 with Retry-After: 60", rec.Code, rec.Header(), rec.Body)
	}
	if rec := fail("198.51.100.2"); rec.Code != 401 {
		t.Fatalf("another client behind the proxy: %d, want 401", rec.Code)
	}
	ok := throttled(on, "/forward-auth", "127.0.0.1:9", with(testkit.Bearer(k.full.Secret), "X-Forwarded-For", "198.51.100.1"))
	if ok.Code != 200 || ok.Header().Get(HeaderKeyID) != k.full.ID {
		t.Fatalf("a valid key from a throttled client: %d, want 200 with its identity", ok.Code)
	}
}
