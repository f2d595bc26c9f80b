package sidecar

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
)

// proxied is keygate's forward-auth on rdb, with the fixtures' keys, an
// app, and the proxy start starts in front of both.
type proxied struct {
	env     *env
	keys    fixtures
	keygate *httptest.Server
	app     *upstream
	base    string // the proxy's URL
	client  *http.Client
}

func newProxied(t *testing.T, rdb redis.UniversalClient, start startProxy) *proxied {
	t.Helper()
	p := &proxied{env: newEnv(t, rdb)}
	p.keys = p.env.fixtures(t)
	p.keygate = httptest.NewServer(forwardAuthMux(t, p.env, ForwardAuthOptions{}))
	t.Cleanup(p.keygate.Close)
	p.app = newUpstream(t)
	p.base = start(t, strings.TrimPrefix(p.keygate.URL, "http://"), strings.TrimPrefix(p.app.URL, "http://"))
	p.client = &http.Client{Timeout: 30 * time.Second}
	return p
}

// startProxy starts a proxy (nginx, Caddy) with its documented
// configuration in front of keygate's forward-auth and app, and returns
// its base URL.
type startProxy func(t *testing.T, keygate, app string) string

// documentedProxy runs the cases every documented proxy configuration
// must pass, through the proxy start starts: a valid key (with and
// without claims) reaches the app with exactly its identity headers and
// without its credential; missing, malformed, unknown, revoked and
// expired keys get 401 and a missing scope 403, with keygate's
// challenge; the public route needs no key; the app's own 500 passes;
// with Redis down the answer is 503 with Retry-After, and with keygate
// down keygateDown, never the app.
func documentedProxy(t *testing.T, start startProxy, keygateDown int) {
	proc := redistest.Start(t)
	rdb := redis.NewClient(redistest.ClientOptions(proc.Addr))
	t.Cleanup(func() { rdb.Close() })
	p := newProxied(t, rdb, start)
	e, k, keygate, app, base, c := p.env, p.keys, p.keygate, p.app, p.base, p.client

	allowed := []struct {
		name, path string
		header     http.Header
		key        *keystore.APIKey
		claims     string // "" when the app must get no claims header
	}{
		{"valid key with claims, spoofed identity replaced", "/orders/1",
			with(testkit.Bearer(k.full.Secret), "X-Api-Key-Subject", "user_admin", "X-Api-Key-Claims", `{"role":"admin"}`), k.full, `{"plan":"pro","seats":3}`},
		{"key without claims, spoofed claims dropped", "/orders/1",
			with(http.Header{"X-Api-Key": {k.limited.Secret}}, "X-Api-Key-Claims", `{"role":"admin"}`), k.limited, ""},
		{"key without claims, none sent", "/orders/1", testkit.Bearer(k.limited.Secret), k.limited, ""},
		{"scoped route, scope held", "/reports/q1", testkit.Bearer(k.full.Secret), k.full, `{"plan":"pro","seats":3}`},
	}
	for _, tc := range allowed {
		t.Run("allowed/"+tc.name, func(t *testing.T) {
			status, _, body := testkit.Do(t, c, "GET", base+tc.path, tc.header, nil)
			if status != 200 || string(body) != "upstream ok" {
				t.Fatalf("got %d %q, want 200 from the app", status, body)
			}
			got := app.Last(t)
			want := map[string]string{
				HeaderKeyID:      tc.key.ID,
				HeaderKeySubject: tc.key.Subject,
				HeaderKeyName:    tc.key.Name,
				HeaderKeyScopes:  strings.Join(tc.key.Scopes, " "),
			}
			if tc.claims != "" {
				want[HeaderKeyClaims] = tc.claims
			}
			// Exactly the key's identity headers: an empty X-Api-Key-Scopes
			// may come empty (Caddy 2.6) or not at all (nginx, and Caddy 2.7
			// and later, send no empty header).
			for name, vs := range got.Header {
				if !hasPrefixFold(name, "X-Api-Key-") {
					continue
				}
				if v, ok := want[name]; !ok || len(vs) != 1 || vs[0] != v {
					t.Errorf("app got %s = %q, want %q (present: %v)", name, vs, v, ok)
				}
				if strings.Contains(strings.Join(vs, ""), "{http.") {
					t.Errorf("app got a placeholder in %s: %q", name, vs)
				}
			}
			for name, v := range want {
				if _, ok := got.Header[name]; !ok && v != "" {
					t.Errorf("app got no %s, want %q", name, v)
				}
			}
			for _, name := range []string{"Authorization", "X-Api-Key"} {
				if v, ok := got.Header[name]; ok {
					t.Errorf("app got the credential header %s: %q", name, v)
				}
			}
			if got.Path != tc.path {
				t.Errorf("app got path %q", got.Path)
			}
		})
	}

	const (
		noError      = `Bearer realm="keygate"`
		invalidToken = `Bearer realm="keygate", error="invalid_token"`
	)
	denied := []struct {
		name, path string
		header     http.Header
		status     int
		challenge  string
	}{
		{"missing", "/orders/1", http.Header{"X-Api-Key-Subject": {"user_admin"}}, 401, noError},
		{"malformed", "/orders/1", testkit.Bearer("ak_garbage"), 401, invalidToken},
		{"unknown", "/orders/1", testkit.Bearer(k.deleted.Secret), 401, invalidToken},
		{"revoked", "/orders/1", testkit.Bearer(k.revoked.Secret), 401, invalidToken},
		{"expired", "/orders/1", testkit.Bearer(k.expired.Secret), 401, invalidToken},
		{"scoped route, scope lacking", "/reports/q1", testkit.Bearer(k.limited.Secret), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read"`},
		{"scoped route, other case", "/REPORTS/q1", testkit.Bearer(k.limited.Secret), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read"`},
	}
	for _, tc := range denied {
		t.Run("denied/"+tc.name, func(t *testing.T) {
			before := app.Hits()
			status, h, body := testkit.Do(t, c, "GET", base+tc.path, tc.header, nil)
			if status != tc.status {
				t.Fatalf("got %d %s, want %d", status, body, tc.status)
			}
			if got := h.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			if app.Hits() != before {
				t.Error("a denied request reached the app")
			}
		})
	}

	t.Run("the app's own 500 passes through untouched", func(t *testing.T) {
		status, _, body := testkit.Do(t, c, "GET", base+"/boom", testkit.Bearer(k.full.Secret), nil)
		if status != 500 || string(body) != "the app failed\n" {
			t.Fatalf("got %d %q, want the app's 500", status, body)
		}
	})

	t.Run("public route needs no key, spoofed identity dropped", func(t *testing.T) {
		status, _, body := testkit.Do(t, c, "GET", base+"/public/docs", http.Header{"X-Api-Key-Subject": {"user_admin"}}, nil)
		if status != 200 {
			t.Fatalf("got %d %s", status, body)
		}
		for name := range app.Last(t).Header {
			if hasPrefixFold(name, "X-Api-Key-") {
				t.Errorf("app got %s on the public route", name)
			}
		}
	})

	t.Run("redis down is 503 with Retry-After, never the app", func(t *testing.T) {
		fresh := e.create(t, keystore.CreateParams{Subject: "user_fresh"}) // never verified, so never cached
		proc.Stop()
		before := app.Hits()
		status, h, body := testkit.Do(t, c, "GET", base+"/orders/1", testkit.Bearer(fresh.Secret), nil)
		if status != 503 || h.Get("Retry-After") != "1" {
			t.Fatalf("got %d (Retry-After %q) %s, want 503 with Retry-After 1", status, h.Get("Retry-After"), body)
		}
		if app.Hits() != before {
			t.Error("the request reached the app while Redis was down")
		}
	})

	t.Run("keygate down is refused, never the app", func(t *testing.T) {
		keygate.Close()
		before := app.Hits()
		status, _, body := testkit.Do(t, c, "GET", base+"/orders/1", testkit.Bearer(k.full.Secret), nil)
		if status != keygateDown {
			t.Fatalf("got %d %s, want %d", status, body, keygateDown)
		}
		if app.Hits() != before {
			t.Error("the request reached the app while keygate was down")
		}
	})
}

// proxyRemovesSpoofed sends every identity and forwarding header, in
// every spelling, through the proxy start starts, to a route that needs a
// key and to the public one: none of the client's values reaches the app,
// and its X-Forwarded-For is the proxy's peer alone.
func proxyRemovesSpoofed(t *testing.T, start startProxy) {
	_, rdb := redistest.Mini(t)
	p := newProxied(t, rdb, start)
	k, app, base, c := p.keys, p.app, p.base, p.client

	throughSpoofed(t, c, base, app, k.full.Secret, func(t *testing.T, verified bool, got http.Header) {
		if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
			t.Errorf("the app got X-Forwarded-For %q, want the proxy's peer alone", v)
		}
		if verified && got.Get(HeaderKeySubject) != k.full.Subject {
			t.Errorf("the app got %s %q", HeaderKeySubject, got.Get(HeaderKeySubject))
		}
	})
}
