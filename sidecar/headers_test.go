package sidecar

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
)

// spoofedHeaders are the identity and forwarding headers a client must
// not be able to send an upstream, each in the spellings that reach a
// CGI, WSGI or Rack application as the same variable: with "-", with "_",
// and in mixed case.
func spoofedHeaders() http.Header {
	names := []string{
		HeaderKeyID, HeaderKeySubject, HeaderKeyName, HeaderKeyScopes, HeaderKeyClaims,
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
		"X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Ssl", "X-Forwarded-Uri",
		"X-Forwarded-Method", "Forwarded", "X-Real-Ip", "True-Client-Ip",
	}
	h := http.Header{}
	for _, n := range names {
		for _, form := range []string{
			n,                               // X-Api-Key-Subject
			strings.ReplaceAll(n, "-", "_"), // X_Api_Key_Subject
			strings.ToLower(n),              // x-api-key-subject
			mixedCase(strings.ReplaceAll(n, "-", "_")), // x_aPi_kEy_sUbJeCt
			mixedCase(n), // x-aPi-kEy-sUbJeCt
		} {
			// Set by hand: Header.Set would canonicalize the name.
			h[form] = append(h[form], "spoofed-"+form)
		}
	}
	return h
}

func mixedCase(s string) string {
	b := []byte(s)
	for i := range b {
		if i%2 == 0 {
			b[i] = strings.ToLower(string(b[i]))[0]
		} else {
			b[i] = strings.ToUpper(string(b[i]))[0]
		}
	}
	return string(b)
}

// checkNoSpoofed fails for every header the upstream got that carries a
// value a client sent, under whatever spelling it arrived.
func checkNoSpoofed(t *testing.T, got http.Header) {
	t.Helper()
	for name, vs := range got {
		for _, v := range vs {
			if strings.Contains(v, "spoofed") {
				t.Errorf("the upstream got %s: %q", name, v)
			}
		}
	}
}

// TestProxyRemovesSpoofedHeaders sends every identity and forwarding
// header, in every spelling, through the sidecar, to a protected path with
// a valid key and to a public path without one: none of the client's
// values reaches the upstream, and the forwarding headers it gets are the
// sidecar's own.
func TestProxyRemovesSpoofedHeaders(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	up := newUpstream(t)
	u, _ := url.Parse(up.URL)
	h, err := NewProxy(e.verifier, ProxyOptions{Upstream: u, Public: []string{"/public/"}})
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewServer(h)
	t.Cleanup(px.Close)
	host := strings.TrimPrefix(px.URL, "http://")

	throughSpoofed(t, px.Client(), px.URL, up, k.full.Secret, func(t *testing.T, verified bool, got http.Header) {
		want := map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": host, "X-Forwarded-Proto": "http"}
		if verified {
			want[HeaderKeyID] = k.full.ID
			want[HeaderKeySubject] = k.full.Subject
		}
		for n, v := range want {
			if vs := got.Values(n); len(vs) != 1 || vs[0] != v {
				t.Errorf("the upstream got %s = %q, want %q", n, vs, v)
			}
		}
	})
}

// throughSpoofed sends spoofedHeaders to base, on a path that needs a key
// (with secret) and on the public one, checks that none of their values
// reached up, and hands check what up got.
func throughSpoofed(t *testing.T, c *http.Client, base string, up *upstream, secret string, check func(t *testing.T, verified bool, got http.Header)) {
	t.Helper()
	for _, tc := range []struct {
		name, path string
		verified   bool
	}{
		{"verified", "/orders/1", true},
		{"public", "/public/docs", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := spoofedHeaders()
			if tc.verified {
				hdr.Set("Authorization", "Bearer "+secret)
			}
			if status, _, body := testkit.Do(t, c, "GET", base+tc.path, hdr, nil); status != 200 {
				t.Fatalf("got %d %s", status, body)
			}
			got := up.Last(t).Header
			checkNoSpoofed(t, got)
			check(t, tc.verified, got)
		})
	}
}

// TestProxyForwardingFromTrustedProxies: the sidecar believes the
// forwarding headers of a trusted proxy only, and passes on the chain
// they vouch for, never what a client wrote before them.
func TestProxyForwardingFromTrustedProxies(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	up := newUpstream(t)
	u, _ := url.Parse(up.URL)
	for _, tc := range []struct {
		name           string
		trusted        []netip.Prefix
		xff            string
		wantXFF        string
		wantProto      string
		wantHost       string
		forwardedHost  string
		forwardedProto string
	}{
		{name: "untrusted peer", xff: "198.51.100.7, 203.0.113.9", wantXFF: "127.0.0.1", wantProto: "http", forwardedHost: "evil.example", forwardedProto: "https"},
		{name: "trusted peer", trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
			xff: "198.51.100.7, 203.0.113.9", wantXFF: "203.0.113.9, 127.0.0.1", wantProto: "https", wantHost: "app.example",
			forwardedHost: "app.example", forwardedProto: "https"},
		{name: "trusted hops are skipped, the client kept", trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
			xff: "198.51.100.7, 203.0.113.9, 10.1.2.3", wantXFF: "203.0.113.9, 10.1.2.3, 127.0.0.1", wantProto: "http", forwardedProto: "gopher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewProxy(e.verifier, ProxyOptions{Upstream: u, TrustedProxies: tc.trusted})
			if err != nil {
				t.Fatal(err)
			}
			px := httptest.NewServer(h)
			defer px.Close()
			hdr := with(testkit.Bearer(k.full.Secret), "X-Forwarded-For", tc.xff, "X-Forwarded-Proto", tc.forwardedProto)
			if tc.forwardedHost != "" {
				hdr = with(hdr, "X-Forwarded-Host", tc.forwardedHost)
			}
			if status, _, body := testkit.Do(t, px.Client(), "GET", px.URL+"/x", hdr, nil); status != 200 {
				t.Fatalf("got %d %s", status, body)
			}
			got := up.Last(t).Header
			wantHost := tc.wantHost
			if wantHost == "" {
				wantHost = strings.TrimPrefix(px.URL, "http://")
			}
			for n, v := range map[string]string{"X-Forwarded-For": tc.wantXFF, "X-Forwarded-Proto": tc.wantProto, "X-Forwarded-Host": wantHost} {
				if vs := got.Values(n); len(vs) != 1 || vs[0] != v {
					t.Errorf("the upstream got %s = %q, want %q", n, vs, v)
				}
			}
		})
	}
}
