package sidecar

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
)

// proxyRig is the sidecar in front of a test upstream, both on loopback
// TCP, verifying against a real redis-server.
type proxyRig struct {
	env   *env
	redis *redistest.Proc
	keys  fixtures
	up    *upstream
	px    *httptest.Server
	c     *http.Client
}

func newProxyRig(t *testing.T, opts ProxyOptions) *proxyRig {
	t.Helper()
	proc := redistest.Start(t)
	rdb := redis.NewClient(redistest.ClientOptions(proc.Addr))
	t.Cleanup(func() { rdb.Close() })
	e := newEnv(t, rdb)
	r := &proxyRig{env: e, redis: proc, keys: e.fixtures(t), up: newUpstream(t)}
	if opts.Upstream == nil {
		opts.Upstream, _ = url.Parse(r.up.URL)
	}
	opts.Registerer = e.reg
	h, err := NewProxy(e.verifier, opts)
	if err != nil {
		t.Fatal(err)
	}
	r.px = httptest.NewServer(h)
	t.Cleanup(r.px.Close)
	r.c = r.px.Client()
	return r
}

func (r *proxyRig) requests(t *testing.T, code string) float64 {
	return testkit.MetricValue(t, r.env.reg, "keygate_proxy_requests_total", map[string]string{"code": code})
}

var rigRoutes = ProxyOptions{
	Public:        []string{"/public/"},
	RequireScopes: []string{"POST /reports/=reports:write", "/reports/=reports:read", "* /admin/=admin"},
}

func TestProxyForwardsVerifiedRequests(t *testing.T) {
	r := newProxyRig(t, rigRoutes)
	k := r.keys

	t.Run("identity set, credential and spoofed identity removed", func(t *testing.T) {
		h := with(testkit.Bearer(k.full.Secret),
			"X-Api-Key-Subject", "user_admin", // spoofed, canonical case
			"x-api-key-claims", `{"role":"admin"}`, // spoofed, lower case
			"X-API-KEY-ROLE", "admin", // an X-Api-Key-* docs/verification.md does not name
			"X-Forwarded-For", "6.6.6.6", // a client cannot claim an address
			"X-Other", "kept")
		status, _, body := testkit.Do(t, r.c, "GET", r.px.URL+"/reports/7?x=1", h, nil)
		if status != 200 || string(body) != "upstream ok" {
			t.Fatalf("got %d %q, want 200 from the upstream", status, body)
		}
		got := r.up.Last(t)
		want := map[string]string{
			HeaderKeyID:        k.full.ID,
			HeaderKeySubject:   "user_full",
			HeaderKeyName:      "CI key",
			HeaderKeyScopes:    "reports:read reports:write",
			HeaderKeyClaims:    `{"plan":"pro","seats":3}`,
			"X-Other":          "kept",
			"X-Forwarded-For":  "127.0.0.1",
			"X-Forwarded-Host": strings.TrimPrefix(r.px.URL, "http://"),
		}
		for name, v := range want {
			if vs := got.Header.Values(name); len(vs) != 1 || vs[0] != v {
				t.Errorf("upstream got %s = %q, want %q", name, vs, v)
			}
		}
		for name := range got.Header {
			if name == "Authorization" || name == "X-Api-Key-Role" {
				t.Errorf("upstream got %s: %q", name, got.Header[name])
			}
		}
		if got.Host != strings.TrimPrefix(r.px.URL, "http://") || got.Path != "/reports/7" || got.RawQuery != "x=1" {
			t.Errorf("upstream got host %q path %q query %q", got.Host, got.Path, got.RawQuery)
		}
	})

	t.Run("X-API-Key header removed, claims header absent when null", func(t *testing.T) {
		h := http.Header{"X-Api-Key": {k.limited.Secret}, "X-Api-Key-Claims": {`{"role":"admin"}`}}
		if status, _, body := testkit.Do(t, r.c, "GET", r.px.URL+"/anything", h, nil); status != 200 {
			t.Fatalf("got %d %s", status, body)
		}
		got := r.up.Last(t)
		if v, ok := got.Header["X-Api-Key"]; ok {
			t.Errorf("upstream got X-Api-Key %q", v)
		}
		if v, ok := got.Header[HeaderKeyClaims]; ok {
			t.Errorf("upstream got %s %q for a key without claims", HeaderKeyClaims, v)
		}
		if vs, ok := got.Header[HeaderKeyScopes]; !ok || vs[0] != "" {
			t.Errorf("upstream got %s %q, want one empty value", HeaderKeyScopes, vs)
		}
		if got.Header.Get(HeaderKeyID) != k.limited.ID {
			t.Errorf("upstream got key ID %q, want %q", got.Header.Get(HeaderKeyID), k.limited.ID)
		}
	})

	allowed := []struct {
		name, method, path string
		key                *keystore.APIKey
	}{
		{"any key outside the routes", "GET", "/", k.limited},
		{"read scope on GET", "GET", "/reports/7", k.full},
		{"write scope on POST", "POST", "/reports/7", k.full},
		{"no rule for PUT on /reports/ but the any-method one", "PUT", "/reports/7", k.full},
	}
	for _, tc := range allowed {
		t.Run("allowed/"+tc.name, func(t *testing.T) {
			before := r.up.Hits()
			if status, _, body := testkit.Do(t, r.c, tc.method, r.px.URL+tc.path, testkit.Bearer(tc.key.Secret), nil); status != 200 {
				t.Fatalf("got %d %s, want 200", status, body)
			}
			if r.up.Hits() != before+1 {
				t.Fatal("the upstream did not get the request")
			}
		})
	}

	const (
		noError      = `Bearer realm="keygate"`
		invalidToken = `Bearer realm="keygate", error="invalid_token"`
	)
	denied := []struct {
		name, method, path string
		header             http.Header
		status             int
		code, challenge    string
	}{
		{"missing", "GET", "/", nil, 401, "authentication_invalid", noError},
		{"other scheme", "GET", "/", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, 401, "authentication_invalid", noError},
		{"malformed", "GET", "/", testkit.Bearer("ak_not_a_key"), 401, "api_key_invalid", invalidToken},
		{"unknown", "GET", "/", testkit.Bearer(k.deleted.Secret), 401, "api_key_not_found", invalidToken},
		{"revoked", "GET", "/", testkit.Bearer(k.revoked.Secret), 401, "api_key_revoked", invalidToken},
		{"expired", "GET", "/", testkit.Bearer(k.expired.Secret), 401, "api_key_expired", invalidToken},
		{"lacks the read scope", "GET", "/reports/7", testkit.Bearer(k.limited.Secret), 403, "insufficient_scope",
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read"`},
		{"a GET rule covers HEAD", "HEAD", "/reports/7", testkit.Bearer(k.limited.Secret), 403, "",
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read"`},
		{"longest prefix wins", "DELETE", "/admin/users", testkit.Bearer(k.full.Secret), 403, "insufficient_scope",
			`Bearer realm="keygate", error="insufficient_scope", scope="admin"`},
		{"a public prefix does not cover a dot-dot escape", "GET", "/public/../admin/users", nil, 401, "authentication_invalid", noError},
		{"a path that decoders read differently", "GET", "/public%2F..%2Fadmin/users", nil, 400, "request_path_invalid", ""},
		{"a dot-dot segment with a parameter", "GET", "/x/..;/admin/users", testkit.Bearer(k.full.Secret), 403, "insufficient_scope",
			`Bearer realm="keygate", error="insufficient_scope", scope="admin"`},
	}
	for _, tc := range denied {
		t.Run("denied/"+tc.name, func(t *testing.T) {
			before, counted := r.up.Hits(), r.requests(t, strconv.Itoa(tc.status))
			status, h, body := testkit.Do(t, r.c, tc.method, r.px.URL+tc.path, tc.header, nil)
			if status != tc.status {
				t.Fatalf("got %d %s, want %d", status, body, tc.status)
			}
			if got := h.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			if tc.method != "HEAD" {
				if code := testkit.ErrorCode(t, body); code != tc.code {
					t.Errorf("error code %q, want %q", code, tc.code)
				}
			}
			if r.up.Hits() != before {
				t.Error("a denied request reached the upstream")
			}
			if got := r.requests(t, strconv.Itoa(tc.status)); got != counted+1 {
				t.Errorf("keygate_proxy_requests_total{code=%q} went from %v to %v, want +1", strconv.Itoa(tc.status), counted, got)
			}
		})
	}

	t.Run("public prefix passes without a key, spoofed identity removed", func(t *testing.T) {
		h := http.Header{"X-Api-Key-Subject": {"user_admin"}, "X-Api-Key-Id": {"ak_00000000000000000000000000000000"},
			"Authorization": {"Basic dXNlcjpwYXNz"}}
		if status, _, body := testkit.Do(t, r.c, "GET", r.px.URL+"/public/docs", h, nil); status != 200 {
			t.Fatalf("got %d %s, want 200", status, body)
		}
		got := r.up.Last(t)
		if got.Path != "/public/docs" {
			t.Fatalf("upstream got %q", got.Path)
		}
		for name := range got.Header {
			if hasPrefixFold(name, "X-Api-Key-") {
				t.Errorf("upstream got %s on a public path", name)
			}
		}
		if got.Header.Get("Authorization") != "Basic dXNlcjpwYXNz" {
			t.Errorf("a public path must pass the request as it came; Authorization = %q", got.Header.Get("Authorization"))
		}
	})

	t.Run("5 MB request body streams to the upstream", func(t *testing.T) {
		const size = 5 << 20
		pr, pw := io.Pipe()
		sum := sha256.New()
		go func() {
			chunk := make([]byte, 64<<10)
			for i := range chunk {
				chunk[i] = byte(i * 7)
			}
			for sent := 0; sent < size; sent += len(chunk) {
				if sent == len(chunk) {
					// The upstream must see the first chunk before the
					// client sends the rest: nothing buffers the body.
					select {
					case <-r.up.uploadStarted:
					case <-time.After(10 * time.Second):
						pw.CloseWithError(errors.New("the upstream got no byte of the body before the client finished it"))
						return
					}
				}
				sum.Write(chunk)
				if _, err := pw.Write(chunk); err != nil {
					return
				}
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", r.px.URL+"/upload", pr)
		req.ContentLength = size
		req.Header = testkit.Bearer(k.full.Secret)
		resp, err := r.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		got := r.up.Last(t)
		if got.BodyLen != size || got.BodySum != hex.EncodeToString(sum.Sum(nil)) {
			t.Fatalf("upstream got %d bytes with SHA-256 %s, want %d bytes with %x", got.BodyLen, got.BodySum, size, sum.Sum(nil))
		}
	})

	t.Run("server-sent events flow event by event", func(t *testing.T) {
		req, _ := http.NewRequest("GET", r.px.URL+"/sse", nil)
		req.Header = testkit.Bearer(k.full.Secret)
		resp, err := r.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("got %d %q", resp.StatusCode, ct)
		}
		br := bufio.NewReader(resp.Body)
		// The upstream sends event two only after we have read event one;
		// a proxy that buffers makes us read event one only after the
		// upstream gave up, followed by the end of the stream.
		if ev := readEvent(t, br); ev != "data: one" {
			t.Fatalf("first event %q", ev)
		}
		r.up.sseRead <- struct{}{}
		if ev := readEvent(t, br); ev != "data: two" {
			t.Fatalf("second event %q: the first one was not flushed when it was sent", ev)
		}
	})

	t.Run("a client hang-up cancels the upstream request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", r.px.URL+"/hang", nil)
		req.Header = testkit.Bearer(k.full.Secret)
		resp, err := r.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-r.up.hangStarted:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream never got the request")
		}
		cancel()
		resp.Body.Close()
		select {
		case <-r.up.hangCancelled:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream request still runs after the client hung up")
		}
	})

	t.Run("store down fails closed with 503", func(t *testing.T) {
		fresh := r.env.create(t, keystore.CreateParams{Subject: "user_fresh"}) // never verified, so never cached
		r.redis.Stop()
		before := r.up.Hits()
		status, h, body := testkit.Do(t, r.c, "GET", r.px.URL+"/", testkit.Bearer(fresh.Secret), nil)
		if status != 503 || testkit.ErrorCode(t, body) != "store_unavailable" || h.Get("Retry-After") == "" {
			t.Fatalf("got %d (Retry-After %q) %s, want 503 store_unavailable with Retry-After", status, h.Get("Retry-After"), body)
		}
		if h.Get("WWW-Authenticate") != "" {
			t.Errorf("a 503 carries WWW-Authenticate %q", h.Get("WWW-Authenticate"))
		}
		if r.up.Hits() != before {
			t.Error("the request reached the upstream while the store was down")
		}
		// Public prefixes need no store.
		if status, _, body := testkit.Do(t, r.c, "GET", r.px.URL+"/public/x", nil, nil); status != 200 {
			t.Errorf("public prefix with the store down: %d %s", status, body)
		}
	})
}

func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading event: %v (got %q so far)", err, lines)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, line)
	}
}

func TestProxyQueryKeyRemoved(t *testing.T) {
	r := newProxyRig(t, ProxyOptions{KeyLookup: "header:Authorization:Bearer ,query:api_key"})
	status, _, body := testkit.Do(t, r.c, "GET", r.px.URL+"/q?b=2&api_key="+r.keys.full.Secret+"&a=1", nil, nil)
	if status != 200 {
		t.Fatalf("got %d %s", status, body)
	}
	if got := r.up.Last(t); got.RawQuery != "a=1&b=2" || got.Header.Get(HeaderKeyID) != r.keys.full.ID {
		t.Fatalf("upstream got query %q and key %q, want %q and %q", got.RawQuery, got.Header.Get(HeaderKeyID), "a=1&b=2", r.keys.full.ID)
	}
	// A query without the key is forwarded byte for byte.
	if status, _, _ := testkit.Do(t, r.c, "GET", r.px.URL+"/q?z=1&a=%2f", testkit.Bearer(r.keys.full.Secret), nil); status != 200 {
		t.Fatalf("got %d", status)
	}
	if got := r.up.Last(t); got.RawQuery != "z=1&a=%2f" {
		t.Fatalf("upstream got query %q", got.RawQuery)
	}
}

func TestProxyUpstreamFailures(t *testing.T) {
	t.Run("unreachable upstream is 502", func(t *testing.T) {
		down, _ := url.Parse("http://" + testkit.FreeAddr(t))
		r := newProxyRig(t, ProxyOptions{Upstream: down})
		status, h, body := testkit.Do(t, r.c, "GET", r.px.URL+"/", testkit.Bearer(r.keys.full.Secret), nil)
		if status != 502 || testkit.ErrorCode(t, body) != "upstream_unavailable" || h.Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %q %s, want 502 upstream_unavailable JSON", status, h.Get("Content-Type"), body)
		}
		if got := r.requests(t, "502"); got != 1 {
			t.Errorf("keygate_proxy_requests_total{code=\"502\"} = %v, want 1", got)
		}
		// A refused key is still refused before the upstream matters.
		if status, _, _ := testkit.Do(t, r.c, "GET", r.px.URL+"/", nil, nil); status != 401 {
			t.Errorf("missing key with the upstream down: %d, want 401", status)
		}
	})

	t.Run("upstream without a response header in time is 504", func(t *testing.T) {
		release := make(chan struct{})
		stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer stall.Close()
		defer close(release)
		u, _ := url.Parse(stall.URL)
		tr := NewTransport()
		tr.ResponseHeaderTimeout = 50 * time.Millisecond
		r := newProxyRig(t, ProxyOptions{Upstream: u, Transport: tr})
		status, _, body := testkit.Do(t, r.c, "GET", r.px.URL+"/", testkit.Bearer(r.keys.full.Secret), nil)
		if status != 504 || testkit.ErrorCode(t, body) != "upstream_timeout" {
			t.Fatalf("got %d %s, want 504 upstream_timeout", status, body)
		}
	})
}

func TestNewProxyRejectsBadConfig(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	up, _ := url.Parse("http://127.0.0.1:3000")
	cases := []struct {
		name string
		opts ProxyOptions
		want string // in the error
	}{
		{"no upstream", ProxyOptions{}, "upstream"},
		{"relative upstream", ProxyOptions{Upstream: &url.URL{Path: "/x"}}, "upstream"},
		{"ftp upstream", ProxyOptions{Upstream: &url.URL{Scheme: "ftp", Host: "x"}}, "upstream"},
		{"bad key lookup", ProxyOptions{Upstream: up, KeyLookup: "body:key"}, "body:key"},
		{"public without slash", ProxyOptions{Upstream: up, Public: []string{"docs"}}, `"docs"`},
		{"bad route", ProxyOptions{Upstream: up, RequireScopes: []string{"GET /x"}}, `"GET /x"`},
		{"repeated route", ProxyOptions{Upstream: up, RequireScopes: []string{"GET /x=a", "get /x=b"}}, `"get /x=b"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewProxy(e.verifier, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if _, err := NewProxy(e.verifier, ProxyOptions{Upstream: up, Registerer: e.reg}); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	// A second proxy on the same registry shares the counter.
	if _, err := NewProxy(e.verifier, ProxyOptions{Upstream: up, Registerer: e.reg}); err != nil {
		t.Fatalf("second proxy on one registry: %v", err)
	}
}
