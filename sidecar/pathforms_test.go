package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
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
// does, under which the long s is an S).
func area(p string) string {
	for _, q := range []string{strings.ToLower(p), strings.ToLower(strings.ToUpper(p))} {
		if q == "/reports" || strings.HasPrefix(q, "/reports/") {
			return "reports"
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

// bypasses counts, and reports, the requests that reached the reports
// without the scope reports:read, or any area but the public one without
// a key.
func (u *routingUpstream) bypasses(t *testing.T) int {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.hits) == 0 {
		t.Fatal("no request reached the upstream")
	}
	n := 0
	for _, h := range u.hits {
		switch {
		case h.area == "reports" && !strings.Contains(" "+h.scopes+" ", " reports:read "):
			n++
			t.Errorf("bypass: %s reached the reports through %s with key %q (scopes %q)", h.target, h.framework, h.keyID, h.scopes)
		case h.area != "public" && h.keyID == "":
			n++
			t.Errorf("bypass: %s reached the %s area through %s without a key", h.target, h.area, h.framework)
		}
	}
	return n
}

// rawGet sends target as the request target, byte for byte, and returns
// the status.
func rawGet(t *testing.T, addr, target string, header http.Header) int {
	t.Helper()
	c := testkit.Dial(t, addr)
	defer c.Close()
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

// pathForms are the paths of TestProxyPathForms and TestNginxPathForms,
// against a public prefix /public/ and a rule that /reports/ needs the
// scope reports:read, with the statuses the sidecar answers.
var pathForms = []struct {
	target           string
	reader, noKey    int // statuses with the reader's key and with none
	scopedKeyAllowed bool
}{
	// The reports area, as a case-insensitive, ";"-stripping framework reaches it.
	{"/reports/x", 403, 401, true},
	{"/REPORTS/x", 403, 401, true},
	{"/Reports/x", 403, 401, true},
	{"/rEpOrTs/x", 403, 401, true},
	{"/reports", 403, 401, true},
	{"/REPORTS", 403, 401, true},
	{"/reports/", 403, 401, true},
	{"/reports;", 403, 401, true},
	{"/reports;a=b/x", 403, 401, true},
	{"/reports;/x", 403, 401, true},
	{"/REPORTS;jsessionid=1/x", 403, 401, true},
	{"/%72eports/x", 403, 401, true},
	{"/%52EPORTS/x", 403, 401, true},
	{"/report%C5%BF/x", 403, 401, true}, // long s
	{"/REPORT%C5%BF/x", 403, 401, true},
	{"//reports/x", 403, 401, true},
	{"///reports//x", 403, 401, true},
	{"/./reports/x", 403, 401, true},
	{"/x/../reports/x", 403, 401, true},
	{"/x/..;/reports/x", 403, 401, true},
	{"/x/..;a=b/reports/x", 403, 401, true},
	{"/x//../reports/x", 403, 401, true},
	{"/reports/../x", 403, 401, true}, // "/x" once resolved, the reports as sent
	// Forms whose meaning depends on the decoder: refused.
	{"/%2572eports/x", 400, 400, false},
	{"/reports%2Fx", 400, 400, false},
	{"/reports%2fx", 400, 400, false},
	{"/%2Freports/x", 400, 400, false},
	{"/reports%5Cx", 400, 400, false},
	{`/reports\x`, 400, 400, false},
	{"/reports%3Bx/y", 400, 400, false},
	{"/x/%2e%2e/reports/x", 400, 400, false},
	{"/x/.%2e/reports/x", 400, 400, false},
	{"/x/%2E%2E/reports/x", 400, 400, false},
	{"/x/%252e%252e/reports/x", 400, 400, false},
	{"/x/..%3B/reports/x", 400, 400, false},
	{"/reports/%2e%2e/x", 403, 401, true}, // the reports as sent: the stricter reading
	// Escapes from a public prefix.
	{"/public/x", 200, 200, true},
	{"/public/x;y=1", 200, 200, true},
	{"/public/%41", 200, 200, true},
	{"/public/../reports/x", 403, 401, true},
	{"/public/..;/reports/x", 403, 401, true},
	{"/public;x/../reports/x", 403, 401, true},
	{"/public//../reports/x", 403, 401, true},
	{"/public/x/../../reports/x", 403, 401, true},
	{"/public/./../reports/x", 403, 401, true},
	{"/public/%2e%2e/reports/x", 400, 400, false},
	{"/public/%252e%252e/reports/x", 400, 400, false},
	{"/public%2F..%2Freports/x", 400, 400, false},
	{"/public/..%2Freports/x", 400, 400, false},
	{`/public\..\reports\x`, 400, 400, false},
	{"/public/%5C..%5Creports/x", 400, 400, false},
	{"/public/x%00/../../reports/x", 400, 400, false},
	{"/public/%C0%AE%C0%AE/reports/x", 400, 400, false},
	{"/PUBLIC/x", 200, 401, true}, // public only as written
	{"/%70ublic/x", 200, 401, true},
	// The rest of the application: any valid key.
	{"/app/x", 200, 401, true},
	{"/app/x;jsessionid=1", 200, 401, true},
	{"/app/a%2Fb", 200, 401, true}, // an encoded slash no rule can see
	{"/app/%252e", 200, 401, true},
}

// TestProxyPathForms sends paths written to slip past --public and
// --require-scopes through the sidecar to an upstream that routes them as
// each of several frameworks would (case-insensitively, with ";"
// parameters, decoded once, twice or not at all, with or without dot
// segments resolved, "\" as "/"), with a key that lacks the scope reports:read
// and with no key. A bypass is a request that reaches the upstream's reports
// without that scope, or any area but the public one without a
// key: there must be none. The statuses show what a client gets.
func TestProxyPathForms(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	reader := e.create(t, keystore.CreateParams{Scopes: []string{"read"}})
	scoped := e.create(t, keystore.CreateParams{Scopes: []string{"reports:read"}})
	up := newRoutingUpstream(t)
	u, _ := url.Parse(up.URL)
	h, err := NewProxy(e.verifier, ProxyOptions{
		Upstream: u, Public: []string{"/public/"}, RequireScopes: []string{"/reports/=reports:read"},
	})
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(h)
	t.Cleanup(px.Close)
	addr := strings.TrimPrefix(px.URL, "http://")

	if len(pathForms) < 40 {
		t.Fatalf("only %d path forms", len(pathForms))
	}
	for _, tc := range pathForms {
		t.Run(tc.target, func(t *testing.T) {
			for _, f := range frameworks {
				hdr := http.Header{"X-Test-Framework": {f.name}}
				if got := rawGet(t, addr, tc.target, hdr); got != tc.noKey {
					t.Errorf("%s, no key: %d, want %d", f.name, got, tc.noKey)
				}
				hdr.Set("Authorization", "Bearer "+reader.Secret)
				if got := rawGet(t, addr, tc.target, hdr); got != tc.reader {
					t.Errorf("%s, a key without the scope: %d, want %d", f.name, got, tc.reader)
				}
				want := 400
				if tc.scopedKeyAllowed {
					want = 200
				}
				hdr.Set("Authorization", "Bearer "+scoped.Secret)
				if got := rawGet(t, addr, tc.target, hdr); got != want {
					t.Errorf("%s, a key with the scope: %d, want %d", f.name, got, want)
				}
			}
		})
	}

	bypasses := up.bypasses(t)
	t.Logf("%d path forms, %d frameworks, %d requests reached the upstream, %d bypasses", len(pathForms), len(frameworks), len(up.hits), bypasses)
}
