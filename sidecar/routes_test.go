package sidecar

import (
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
			public, scopes := rt.match(tc.method, tc.path, true)
			if public != tc.public || strings.Join(scopes, " ") != tc.scopes {
				t.Fatalf("got public=%v scopes=%q, want public=%v scopes=%q", public, scopes, tc.public, tc.scopes)
			}
		})
	}
	if public, _ := rt.match("GET", "/public/x", false); public {
		t.Fatal("a public rule applied to a path that is not public-eligible")
	}
}

func TestRoutePath(t *testing.T) {
	cases := []struct {
		target   string
		want     string
		publicOK bool
		ok       bool
	}{
		{"/public/x", "/public/x", true, true},
		{"/public/x/", "/public/x/", true, true},
		{"/public/../admin", "/admin", false, true},
		{"/public//admin", "/public/admin", false, true},
		{"/public/./x", "/public/x", false, true},
		{`/public\..\admin`, "/admin", false, true},
		{"/public%2F..%2Fadmin", "/admin", false, true},
		{"/public%2fx", "/public/x", false, true},
		{"/%70ublic/x", "/public/x", true, true}, // decoded as upstreams decode it
		{"/public/..;/admin", "/public/..;/admin", false, false},
		{"/../../etc/passwd", "/etc/passwd", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://example.com"+tc.target, nil)
			got, publicOK, ok := routePath(req)
			if got != tc.want || publicOK != tc.publicOK || ok != tc.ok {
				t.Fatalf("got %q publicOK=%v ok=%v, want %q %v %v", got, publicOK, ok, tc.want, tc.publicOK, tc.ok)
			}
		})
	}
}
