package sidecar

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	cases := []struct {
		spec   string
		want   rule
		errHas string // "" when the spec is valid
	}{
		{spec: "GET /reports=reports:read", want: rule{method: "GET", prefix: "/reports", scopes: []string{"reports:read"}}},
		{spec: "post /reports/=reports:write,audit", want: rule{method: "POST", prefix: "/reports/", scopes: []string{"reports:write", "audit"}}},
		{spec: "* /admin/=admin", want: rule{prefix: "/admin/", scopes: []string{"admin"}}},
		{spec: "/admin/=admin, audit ", want: rule{prefix: "/admin/", scopes: []string{"admin", "audit"}}},
		{spec: "  GET   /=read", want: rule{method: "GET", prefix: "/", scopes: []string{"read"}}},
		{spec: "GET /reports", errHas: "no '='"},
		{spec: "GET reports=x", errHas: "must start with /"},
		{spec: "GET /a/../b=x", errHas: "not a clean path"},
		{spec: "GET /reports=", errHas: `scope ""`},
		{spec: "GET /reports=a,,b", errHas: `scope ""`},
		{spec: "GET /reports=a b", errHas: `scope "a b"`},
		{spec: "G3T /reports=x", errHas: "not an HTTP method"},
		{spec: "GET POST /reports=x", errHas: "want 'METHOD /prefix=scope1,scope2'"},
		{spec: "=x", errHas: "want 'METHOD /prefix=scope1,scope2'"},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := parseRule(tc.spec)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("got %+v, %v; want an error with %q", got, err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.method != tc.want.method || got.prefix != tc.want.prefix || !slices.Equal(got.scopes, tc.want.scopes) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNewRouterNamesTheBadValue(t *testing.T) {
	_, err := newRouter(nil, []string{"GET /ok=a", "GET /bad"})
	if err == nil || !strings.Contains(err.Error(), `require-scopes "GET /bad"`) {
		t.Fatalf("got %v", err)
	}
	_, err = newRouter([]string{"/docs", "nope"}, nil)
	if err == nil || !strings.Contains(err.Error(), `public "nope"`) {
		t.Fatalf("got %v", err)
	}
}

func TestRouterMatch(t *testing.T) {
	rt, err := newRouter(
		[]string{"/public/", "/reports/public/", "/shared/"},
		[]string{
			"GET /reports=reports:read",
			"POST /reports=reports:write",
			"/reports/admin/=reports:admin",
			"* /shared/=shared", // same prefix as a public one: the scope rule wins
			"DELETE /=root:delete",
		})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		public       bool
		scopes       string
	}{
		{"GET", "/", false, ""},
		{"DELETE", "/anything", false, "root:delete"},
		{"GET", "/reports", false, "reports:read"},
		{"GET", "/reports-2024", false, "reports:read"}, // plain prefix, as nginx
		{"HEAD", "/reports/1", false, "reports:read"},   // GET covers HEAD
		{"POST", "/reports/1", false, "reports:write"},
		{"PUT", "/reports/1", false, ""},
		{"GET", "/reports/admin/x", false, "reports:admin"}, // longer any-method prefix beats GET /reports
		{"DELETE", "/reports/admin/x", false, "reports:admin"},
		{"GET", "/reports/public/x", true, ""}, // longest prefix wins over GET /reports
		{"DELETE", "/public/x", true, ""},
		{"GET", "/public", false, ""}, // "/public/" does not match "/public"
		{"GET", "/shared/x", false, "shared"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			n, err := rt.route(httptest.NewRequest(tc.method, tc.path, nil))
			if err != nil || n.public != tc.public || strings.Join(n.scopes, " ") != tc.scopes {
				t.Fatalf("got public=%v scopes=%q (%v), want public=%v scopes=%q", n.public, n.scopes, err, tc.public, tc.scopes)
			}
		})
	}
}

// TestRoute checks what route makes of paths that upstreams read in
// different ways; TestProxyPathForms sends such paths through the proxy
// to upstreams that read them those ways.
func TestRoute(t *testing.T) {
	rt, err := newRouter([]string{"/public/"}, []string{"/admin/=admin", "GET /files=files:read"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, target string
		header         http.Header
		public         bool
		scopes         string
		refused        bool
	}{
		{method: "GET", target: "/public/x", public: true},
		{method: "GET", target: "/public/%41", public: true},
		{method: "GET", target: "/PUBLIC/x"},                           // public only as written
		{method: "GET", target: "/%70ublic/x"},                         // an upstream may route the encoded form
		{method: "GET", target: "/public/../admin/x", scopes: "admin"}, // resolved, or not: the stricter
		{method: "GET", target: "/public/..;/admin/x", scopes: "admin"},
		{method: "GET", target: "/public//../admin/x", scopes: "admin"},
		{method: "GET", target: "/ADMIN/x", scopes: "admin"},
		{method: "GET", target: "/admin", scopes: "admin"}, // "/admin/" covers "/admin"
		{method: "GET", target: "/admin;a=b/x", scopes: "admin"},
		{method: "GET", target: "/%61dmin/x", scopes: "admin"},
		{method: "GET", target: "/adm%C4%B1n/x", scopes: "admin"}, // dotless i
		{method: "GET", target: "/%E2%84%AAey/x"},                 // the Kelvin sign folds to k: no rule here
		{method: "GET", target: "/x", header: http.Header{"X-Http-Method-Override": {"get"}}, scopes: ""},
		{method: "POST", target: "/files/1", header: http.Header{"X-Http-Method-Override": {"GET"}}, scopes: "files:read"},
		{method: "GET", target: "/%2561dmin/x", refused: true},
		{method: "GET", target: "/admin%2Fx", refused: true},
		{method: "GET", target: "/public/%2e%2e/admin/x", refused: true},
		{method: "GET", target: "/public/%252e%252e/admin/x", refused: true},
		{method: "GET", target: "/public/..%3B/admin/x", refused: true},
		{method: "GET", target: "/public/x%00/../../admin", refused: true},
		{method: "GET", target: "/files/a%2Fb", scopes: "files:read"},                  // ambiguous, but every reading needs the same
		{method: "GET", target: "/docs/a%2Fb/%252e"},                                   // likewise: no rule can apply
		{method: "GET", target: "/docs/" + strings.Repeat("a%20", 600), refused: true}, // too long to read every way
		{method: "GET", target: "/docs/" + strings.Repeat("abcd", 600)},                // plain: one reading, no bound
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://example.com"+tc.target, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			n, err := rt.route(req)
			if tc.refused {
				if err == nil {
					t.Fatalf("got public=%v scopes=%q, want the path refused", n.public, n.scopes)
				}
				return
			}
			if err != nil || n.public != tc.public || strings.Join(n.scopes, " ") != tc.scopes {
				t.Fatalf("got public=%v scopes=%q (%v), want public=%v scopes=%q", n.public, n.scopes, err, tc.public, tc.scopes)
			}
		})
	}
}

// BenchmarkRoute measures what deciding a request's rules costs: a plain
// path (one reading), and the worst a client can ask for, a path of
// maxReadPath bytes with every feature that multiplies the readings.
func BenchmarkRoute(b *testing.B) {
	rt, err := newRouter([]string{"/public/"}, []string{"/admin/=admin", "GET /reports/=reports:read"})
	if err != nil {
		b.Fatal(err)
	}
	crafted := "/public/..;%2F%252e/" + strings.Repeat("a;b//./%41/", maxReadPath/11)
	crafted = crafted[:maxReadPath]
	for _, bc := range []struct{ name, target string }{
		{"plain", "/reports/2024/q1"},
		{"crafted-2KiB", crafted},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "http://example.com"+bc.target, nil)
			b.ReportAllocs()
			for b.Loop() {
				rt.route(req)
			}
		})
	}
}
