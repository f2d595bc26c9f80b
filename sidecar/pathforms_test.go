package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
)

// A framework is how an upstream turns the request target it receives into
// the path it routes. Each is written here independently of the proxy's
// own reading of paths, and each folds case and honours ";" parameters in
// some way, as the frameworks behind keygate do.
type framework struct {
	name  string
	route func(target string) string
}

var frameworks = []framework{
	// Tomcat and Spring: ";" parameters cut from each segment as sent, then
	// decoded once (%2F becomes a separator), dot segments and repeated
	// slashes resolved.
	{"strip-then-decode", func(t string) string {
		segs := strings.Split(t, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		return path.Clean(unescapeAll(strings.Join(segs, "/")))
	}},
	// Decoded first, then ";" parameters cut: %3B is a ";".
	{"decode-then-strip", func(t string) string {
		segs := strings.Split(unescapeAll(t), "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		return path.Clean(strings.Join(segs, "/"))
	}},
	// Decoded twice (a proxy and then the application each decode once).
	{"double-decode", func(t string) string {
		segs := strings.Split(unescapeAll(unescapeAll(t)), "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		return path.Clean(strings.Join(segs, "/"))
	}},
	// Express: routes the path as sent, neither decoded nor resolved.
	{"as-sent", func(t string) string { return t }},
	// Envoy's normalize_path without merge_slashes: dot segments resolved
	// as sent, slashes kept, each segment decoded (%2F stays inside it).
	{"rfc3986-no-merge", func(t string) string {
		var out []string
		segs := strings.Split(t[1:], "/")
		for i, s := range segs {
			s, _, _ = strings.Cut(s, ";")
			switch s {
			case "..":
				if len(out) > 0 {
					out = out[:len(out)-1]
				}
			case ".":
			default:
				out = append(out, strings.ReplaceAll(unescapeAll(s), "/", "%2F"))
				continue
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		}
		return "/" + strings.Join(out, "/")
	}},
	// IIS and ASP.NET on Windows: decoded, "\" read as "/".
	{"backslash", func(t string) string {
		d := strings.ReplaceAll(unescapeAll(t), `\`, "/")
		segs := strings.Split(d, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		return path.Clean(strings.Join(segs, "/"))
	}},
	// C servers that stop at a NUL byte.
	{"nul-truncating", func(t string) string {
		d, _, _ := strings.Cut(unescapeAll(t), "\x00")
		return path.Clean(d)
	}},
}

// unescapeAll decodes every valid %XX, as a lenient decoder does.
func unescapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := url.PathUnescape(s[i : i+3]); err == nil {
				b.WriteString(v)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// area is the part of the application a routed path reaches, compared
// case-insensitively both ways (lower-casing, and upper-casing as .NET
// does, under which the dotless i is an I).
func area(p string) string {
	for _, q := range []string{strings.ToLower(p), strings.ToLower(strings.ToUpper(p))} {
		if q == "/admin" || strings.HasPrefix(q, "/admin/") {
			return "admin"
		}
	}
	for _, q := range []string{strings.ToLower(p), strings.ToLower(strings.ToUpper(p))} {
		if strings.HasPrefix(q, "/public/") {
			return "public"
		}
	}
	return "app"
}

// routingUpstream routes each request as the framework named by its
// X-Test-Framework header would, and records where it went and with
// which identity.
type routingUpstream struct {
	*httptest.Server
	mu   sync.Mutex
	hits []routed
}

type routed struct {
	framework, target, area, keyID, scopes string
}

func newRoutingUpstream(t *testing.T) *routingUpstream {
	u := &routingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target, _, _ := strings.Cut(r.RequestURI, "?")
		name := r.Header.Get("X-Test-Framework")
		for _, f := range frameworks {
			if f.name == name {
				u.mu.Lock()
				u.hits = append(u.hits, routed{name, target, area(f.route(target)), r.Header.Get(HeaderKeyID), r.Header.Get(HeaderKeyScopes)})
				u.mu.Unlock()
			}
		}
		io.WriteString(w, "upstream ok")
	}))
	t.Cleanup(u.Close)
	return u
}

// rawGet sends target as the request target, byte for byte, and returns
// the status.
func rawGet(t *testing.T, addr, target string, header http.Header) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a bound for a hung test, not a measurement
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n", target)
	header.Write(&b)
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestProxyPathForms sends paths written to slip past --public and
// --require-scopes through the sidecar to an upstream that routes them as
// each of several frameworks would (case-insensitively, with ";"
// parameters, decoded once, twice or not at all, with or without dot
// segments resolved, "\" as "/"), with a key that lacks the admin scope
// and with no key. A bypass is a request that reaches the upstream's admin
// area without the admin scope, or any area but the public one without a
// key: there must be none. The statuses show what a client gets.
func TestProxyPathForms(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	reader := e.create(t, keystore.CreateParams{Scopes: []string{"read"}})
	admin := e.create(t, keystore.CreateParams{Scopes: []string{"admin"}})
	up := newRoutingUpstream(t)
	u, _ := url.Parse(up.URL)
	h, err := NewProxy(e.verifier, ProxyOptions{
		Upstream: u, Public: []string{"/public/"}, RequireScopes: []string{"/admin/=admin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(h)
	t.Cleanup(px.Close)
	addr := strings.TrimPrefix(px.URL, "http://")

	cases := []struct {
		target          string
		reader, noKey   int // statuses with the reader's key and with none
		adminKeyAllowed bool
	}{
		// The admin area, as a case-insensitive, ";"-stripping framework reaches it.
		{"/admin/x", 403, 401, true},
		{"/ADMIN/x", 403, 401, true},
		{"/Admin/x", 403, 401, true},
		{"/aDmIn/x", 403, 401, true},
		{"/admin", 403, 401, true},
		{"/ADMIN", 403, 401, true},
		{"/admin/", 403, 401, true},
		{"/admin;", 403, 401, true},
		{"/admin;a=b/x", 403, 401, true},
		{"/admin;/x", 403, 401, true},
		{"/ADMIN;jsessionid=1/x", 403, 401, true},
		{"/%61dmin/x", 403, 401, true},
		{"/%41DMIN/x", 403, 401, true},
		{"/adm%C4%B1n/x", 403, 401, true}, // dotless i
		{"/ADM%C4%B0N/x", 403, 401, true}, // dotted capital I
		{"//admin/x", 403, 401, true},
		{"///admin//x", 403, 401, true},
		{"/./admin/x", 403, 401, true},
		{"/x/../admin/x", 403, 401, true},
		{"/x/..;/admin/x", 403, 401, true},
		{"/x/..;a=b/admin/x", 403, 401, true},
		{"/x//../admin/x", 403, 401, true},
		{"/admin/../x", 403, 401, true}, // "/x" once resolved, the admin area as sent
		// Forms whose meaning depends on the decoder: refused.
		{"/%2561dmin/x", 400, 400, false},
		{"/admin%2Fx", 400, 400, false},
		{"/admin%2fx", 400, 400, false},
		{"/%2Fadmin/x", 400, 400, false},
		{"/admin%5Cx", 400, 400, false},
		{`/admin\x`, 400, 400, false},
		{"/admin%3Bx/y", 400, 400, false},
		{"/x/%2e%2e/admin/x", 400, 400, false},
		{"/x/.%2e/admin/x", 400, 400, false},
		{"/x/%2E%2E/admin/x", 400, 400, false},
		{"/x/%252e%252e/admin/x", 400, 400, false},
		{"/x/..%3B/admin/x", 400, 400, false},
		{"/admin/%2e%2e/x", 403, 401, true}, // the admin area as sent: the stricter reading
		// Escapes from a public prefix.
		{"/public/x", 200, 200, true},
		{"/public/x;y=1", 200, 200, true},
		{"/public/%41", 200, 200, true},
		{"/public/../admin/x", 403, 401, true},
		{"/public/..;/admin/x", 403, 401, true},
		{"/public;x/../admin/x", 403, 401, true},
		{"/public//../admin/x", 403, 401, true},
		{"/public/x/../../admin/x", 403, 401, true},
		{"/public/./../admin/x", 403, 401, true},
		{"/public/%2e%2e/admin/x", 400, 400, false},
		{"/public/%252e%252e/admin/x", 400, 400, false},
		{"/public%2F..%2Fadmin/x", 400, 400, false},
		{"/public/..%2Fadmin/x", 400, 400, false},
		{`/public\..\admin\x`, 400, 400, false},
		{"/public/%5C..%5Cadmin/x", 400, 400, false},
		{"/public/x%00/../../admin/x", 400, 400, false},
		{"/public/%C0%AE%C0%AE/admin/x", 400, 400, false},
		{"/PUBLIC/x", 200, 401, true}, // public only as written
		{"/%70ublic/x", 200, 401, true},
		// The rest of the application: any valid key.
		{"/app/x", 200, 401, true},
		{"/app/x;jsessionid=1", 200, 401, true},
		{"/app/a%2Fb", 200, 401, true}, // an encoded slash no rule can see
		{"/app/%252e", 200, 401, true},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d path forms", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			for _, f := range frameworks {
				hdr := http.Header{"X-Test-Framework": {f.name}}
				if got := rawGet(t, addr, tc.target, hdr); got != tc.noKey {
					t.Errorf("%s, no key: %d, want %d", f.name, got, tc.noKey)
				}
				hdr.Set("Authorization", "Bearer "+reader.Secret)
				if got := rawGet(t, addr, tc.target, hdr); got != tc.reader {
					t.Errorf("%s, a key without the admin scope: %d, want %d", f.name, got, tc.reader)
				}
				want := 400
				if tc.adminKeyAllowed {
					want = 200
				}
				hdr.Set("Authorization", "Bearer "+admin.Secret)
				if got := rawGet(t, addr, tc.target, hdr); got != want {
					t.Errorf("%s, the admin key: %d, want %d", f.name, got, want)
				}
			}
		})
	}

	bypasses := 0
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, h := range up.hits {
		switch {
		case h.area == "admin" && !strings.Contains(" "+h.scopes+" ", " admin "):
			bypasses++
			t.Errorf("bypass: %s reached the admin area through %s with key %q (scopes %q)", h.target, h.framework, h.keyID, h.scopes)
		case h.area != "public" && h.keyID == "":
			bypasses++
			t.Errorf("bypass: %s reached the %s area through %s without a key", h.target, h.area, h.framework)
		}
	}
	if len(up.hits) == 0 {
		t.Fatal("no request reached the upstream")
	}
	t.Logf("%d path forms, %d frameworks, %d requests reached the upstream, %d bypasses", len(cases), len(frameworks), len(up.hits), bypasses)
}
