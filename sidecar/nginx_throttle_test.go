package sidecar

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
)

// clientFrom returns an HTTP client whose connections come from the
// loopback address local, so that nginx sees distinct clients.
func clientFrom(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// TestNginxThrottle runs the documented nginx configuration in front of
// forward-auth that trusts only nginx (127.0.0.1) for X-Forwarded-For:
// a client's failures are counted by its own address (127.0.0.2, .3),
// whatever X-Forwarded-For it sends, and nginx passes the 429 and its
// Retry-After on instead of turning it into a 500.
func TestNginxThrottle(t *testing.T) {
	proc := redistest.Start(t)
	rdb := redis.NewClient(redistest.ClientOptions(proc.Addr))
	t.Cleanup(func() { rdb.Close() })
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	keygate := httptest.NewServer(forwardAuthMux(t, e, ForwardAuthOptions{Throttle: ThrottleOptions{
		FailuresPerMinute: 1, Burst: 2, Now: e.clock.Now,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	}}))
	t.Cleanup(keygate.Close)
	app := newUpstream(t)
	base := startNginx(t, strings.TrimPrefix(keygate.URL, "http://"), strings.TrimPrefix(app.URL, "http://"))
	a, b := clientFrom("127.0.0.2"), clientFrom("127.0.0.3")

	get := func(c *http.Client, secret string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/orders/1", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("X-Forwarded-For", "198.51.100.77") // a client's claim: never believed
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i, want := range []int{401, 401, 429, 429} {
		resp := get(a, k.revoked.Secret)
		if resp.StatusCode != want {
			t.Fatalf("client A, failure %d: %d, want %d", i+1, resp.StatusCode, want)
		}
		if want == 429 && resp.Header.Get("Retry-After") != "60" {
			t.Fatalf("429 through nginx with Retry-After %q, want keygate's 60", resp.Header.Get("Retry-After"))
		}
	}
	if resp := get(b, k.revoked.Secret); resp.StatusCode != 401 {
		t.Fatalf("client B: %d, want 401 (a budget of its own)", resp.StatusCode)
	}
	before := app.Hits()
	if resp := get(a, k.full.Secret); resp.StatusCode != 200 || app.Hits() != before+1 {
		t.Fatalf("client A with a valid key: %d, want 200 from the app", resp.StatusCode)
	}
}
