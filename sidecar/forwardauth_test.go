package sidecar

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
)

// unreadable is a request body that fails the test when read.
type unreadable struct{ t *testing.T }

func (u unreadable) Read([]byte) (int, error) {
	u.t.Error("forward-auth read the request body")
	return 0, io.EOF
}

func forwardAuthMux(t *testing.T, e *env, opts ForwardAuthOptions) *http.ServeMux {
	t.Helper()
	fa, err := NewForwardAuth(e.verifier, opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ForwardAuthPath, fa)
	mux.Handle(ForwardAuthPath+"/", fa)
	return mux
}

func TestForwardAuth(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	mux := forwardAuthMux(t, e, ForwardAuthOptions{})

	const (
		noError      = `Bearer realm="keygate"`
		invalidToken = `Bearer realm="keygate", error="invalid_token"`
	)
	cases := []struct {
		name, method, target string
		header               http.Header
		status               int
		challenge            string
		identity             *keystore.APIKey // the key whose identity headers a 200 carries
	}{
		{"valid", "GET", "/forward-auth", testkit.Bearer(k.full.Secret), 200, "", k.full},
		{"any path below, any method, body unread", "POST", "/forward-auth/api/v1/things", testkit.Bearer(k.full.Secret), 200, "", k.full},
		{"HEAD", "HEAD", "/forward-auth", testkit.Bearer(k.limited.Secret), 200, "", k.limited},
		{"DELETE", "DELETE", "/forward-auth/x", testkit.Bearer(k.limited.Secret), 200, "", k.limited},
		{"X-API-Key", "GET", "/forward-auth", http.Header{"X-Api-Key": {k.limited.Secret}}, 200, "", k.limited},
		{"scopes held, from the query", "GET", "/forward-auth?scopes=reports:read,reports:write", testkit.Bearer(k.full.Secret), 200, "", k.full},
		{"scopes held, from the header", "GET", "/forward-auth", with(testkit.Bearer(k.full.Secret), HeaderRequiredScopes, "reports:read reports:write"), 200, "", k.full},
		{"scope lacking, from the query", "GET", "/forward-auth?scopes=admin", testkit.Bearer(k.full.Secret), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="admin"`, nil},
		{"scopes lacking, from the header, comma and space", "GET", "/forward-auth", with(testkit.Bearer(k.limited.Secret), HeaderRequiredScopes, "reports:read, reports:write"), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read reports:write"`, nil},
		{"query and header add up", "GET", "/forward-auth?scopes=reports:read", with(testkit.Bearer(k.full.Secret), HeaderRequiredScopes, "admin"), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read admin"`, nil},
		{"a bad escape in scopes fails closed", "GET", "/forward-auth?scopes=admin%zz", testkit.Bearer(k.full.Secret), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="admin%zz"`, nil},
		{"missing", "GET", "/forward-auth", nil, 401, noError, nil},
		{"malformed", "GET", "/forward-auth", testkit.Bearer("ak_nope"), 401, invalidToken, nil},
		{"unknown", "GET", "/forward-auth", testkit.Bearer(k.deleted.Secret), 401, invalidToken, nil},
		{"revoked", "GET", "/forward-auth", testkit.Bearer(k.revoked.Secret), 401, invalidToken, nil},
		{"expired", "GET", "/forward-auth", testkit.Bearer(k.expired.Secret), 401, invalidToken, nil},
		{"original URI query is not a key source by default", "GET", "/forward-auth",
			http.Header{"X-Forwarded-Uri": {"/x?api_key=" + k.full.Secret}}, 401, noError, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, unreadable{t})
			for name, vs := range tc.header {
				req.Header[name] = vs
			}
			req.Header["X-Api-Key-Subject"] = []string{"user_spoofed"}
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, tc.status)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			if tc.status != 200 {
				if rec.Body.Len() > 512 {
					t.Errorf("denial body of %d bytes, want a tiny one", rec.Body.Len())
				}
				for name := range rec.Header() {
					if hasPrefixFold(name, "X-Api-Key-") {
						t.Errorf("a denial carries %s", name)
					}
				}
				return
			}
			if rec.Body.Len() != 0 {
				t.Errorf("a 200 with body %q", rec.Body)
			}
			want := map[string]string{
				HeaderKeyID:      tc.identity.ID,
				HeaderKeySubject: tc.identity.Subject,
				HeaderKeyName:    tc.identity.Name,
				HeaderKeyScopes:  strings.Join(tc.identity.Scopes, " "),
			}
			if tc.identity.Claims != nil {
				want[HeaderKeyClaims] = `{"plan":"pro","seats":3}`
			}
			for name, v := range want {
				if vs := rec.Header().Values(name); len(vs) != 1 || vs[0] != v {
					t.Errorf("%s = %q, want %q", name, vs, v)
				}
			}
			if _, ok := rec.Header()[HeaderKeyClaims]; ok && tc.identity.Claims == nil {
				t.Errorf("%s present for a key without claims", HeaderKeyClaims)
			}
		})
	}

	t.Run("query key lookup reads the original URI", func(t *testing.T) {
		qmux := forwardAuthMux(t, e, ForwardAuthOptions{KeyLookup: "query:api_key"})
		for _, h := range []string{"X-Forwarded-Uri", "X-Original-Uri"} {
			req := httptest.NewRequest("GET", "/forward-auth", nil)
			req.Header.Set(h, "/reports?api_key="+k.full.Secret)
			rec := httptest.NewRecorder()
			qmux.ServeHTTP(rec, req)
			if rec.Code != 200 || rec.Header().Get(HeaderKeyID) != k.full.ID {
				t.Errorf("key in %s: got %d, want 200 for %s", h, rec.Code, k.full.ID)
			}
		}
	})

	t.Run("store down is 503 with Retry-After, never 200", func(t *testing.T) {
		mr.Close()
		req := httptest.NewRequest("GET", "/forward-auth", nil)
		req.Header = testkit.Bearer(k.full.Secret)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || testkit.ErrorCode(t, rec.Body.Bytes()) != "store_unavailable" {
			t.Fatalf("got %d (Retry-After %q) %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	})
}

func TestNewForwardAuthRejectsBadLookup(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	if _, err := NewForwardAuth(e.verifier, ForwardAuthOptions{KeyLookup: "cookie:x"}); err == nil || !strings.Contains(err.Error(), "cookie:x") {
		t.Fatalf("got %v, want an error naming the lookup", err)
	}
}

func TestOriginalRequest(t *testing.T) {
	cases := []struct {
		name, method, target string
		header               http.Header
		wantMethod, wantURI  string
	}{
		{"traefik", "GET", "/forward-auth", http.Header{"X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {"/a?b=c"}}, "POST", "/a?b=c"},
		{"nginx", "GET", "/forward-auth", http.Header{"X-Original-Method": {"PUT"}, "X-Original-Uri": {"/n"}}, "PUT", "/n"},
		{"envoy path_prefix", "DELETE", "/forward-auth/things/1?x=y", nil, "DELETE", "/things/1?x=y"},
		{"nothing said", "GET", "/forward-auth", nil, "GET", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			m, u := originalRequest(req)
			if m != tc.wantMethod || u != tc.wantURI {
				t.Fatalf("got %s %q, want %s %q", m, u, tc.wantMethod, tc.wantURI)
			}
		})
	}
}
