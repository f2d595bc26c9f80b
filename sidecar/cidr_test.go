package sidecar

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
)

// TestAllowedCIDRs sends a key restricted to 203.0.113.0/24 through the
// proxy and forward-auth, from direct peers, through trusted proxies
// (10.0.0.0/8) and with spoofed X-Forwarded-For; and a disabled key.
func TestAllowedCIDRs(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.create(t, keystore.CreateParams{Subject: "user_office", AllowedCIDRs: []string{"203.0.113.0/24", "2001:db8::/32"}})
	disabled := e.create(t, keystore.CreateParams{Subject: "user_off", Enabled: new(false)})
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	u, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := NewProxy(e.verifier, ProxyOptions{Upstream: u, TrustedProxies: trusted})
	if err != nil {
		t.Fatal(err)
	}
	fa := forwardAuthMux(t, e, ForwardAuthOptions{TrustedProxies: trusted})
	// Forward-auth without trusted proxies: every request comes from the
	// proxy asking, whose own address is the client's.
	faUntrusting := forwardAuthMux(t, e, ForwardAuthOptions{})

	for _, tc := range []struct {
		name   string
		h      http.Handler
		target string
		secret string
		remote string
		xff    string
		status int
		code   string
	}{
		{"proxy, direct peer inside", proxy, "/x", k.Secret, "203.0.113.7:4000", "", 200, ""},
		{"proxy, direct IPv6 peer inside", proxy, "/x", k.Secret, "[2001:db8::5]:4000", "", 200, ""},
		{"proxy, direct peer outside", proxy, "/x", k.Secret, "192.0.2.1:4000", "", 403, "api_key_ip_not_allowed"},
		{"proxy, untrusted peer's header ignored", proxy, "/x", k.Secret, "192.0.2.1:4000", "203.0.113.7", 403, "api_key_ip_not_allowed"},
		{"proxy, trusted proxy for a client inside", proxy, "/x", k.Secret, "10.0.0.5:4000", "203.0.113.7", 200, ""},
		{"proxy, spoofed entry left of the client", proxy, "/x", k.Secret, "10.0.0.5:4000", "203.0.113.7, 198.51.100.9", 403, "api_key_ip_not_allowed"},
		{"proxy, disabled", proxy, "/x", disabled.Secret, "203.0.113.7:4000", "", 401, "api_key_disabled"},
		{"forward-auth, proxy reports a client inside", fa, "/forward-auth", k.Secret, "10.0.0.5:4000", "203.0.113.7", 200, ""},
		{"forward-auth, proxy reports a client outside", fa, "/forward-auth", k.Secret, "10.0.0.5:4000", "198.51.100.9", 403, "api_key_ip_not_allowed"},
		{"forward-auth, spoofed entry left of the client", fa, "/forward-auth", k.Secret, "10.0.0.5:4000", "203.0.113.7, 198.51.100.9", 403, "api_key_ip_not_allowed"},
		{"forward-auth, untrusted asker's header ignored", fa, "/forward-auth", k.Secret, "192.0.2.1:4000", "203.0.113.7", 403, "api_key_ip_not_allowed"},
		{"forward-auth without trusted proxies", faUntrusting, "/forward-auth", k.Secret, "10.0.0.5:4000", "203.0.113.7", 403, "api_key_ip_not_allowed"},
		{"forward-auth, disabled", fa, "/forward-auth", disabled.Secret, "10.0.0.5:4000", "203.0.113.7", 401, "api_key_disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			r.RemoteAddr = tc.remote
			r.Header = with(testkit.Bearer(tc.secret))
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, r)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.code == "" {
				return
			}
			var b struct{ Errors []struct{ Code string } }
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || len(b.Errors) == 0 || b.Errors[0].Code != tc.code {
				t.Errorf("body %s, want code %s", rec.Body, tc.code)
			}
			if ch := rec.Header().Get("WWW-Authenticate"); (tc.status == 403) == (ch != "") {
				t.Errorf("WWW-Authenticate %q on a %d", ch, tc.status)
			}
		})
	}
}

// TestRolledKeysSayWhichOneWasUsed: during a roll's grace both keys pass
// forward-auth, each with its own ID in X-Api-Key-Id.
func TestRolledKeysSayWhichOneWasUsed(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	old := e.create(t, keystore.CreateParams{Subject: "org_1", Scopes: []string{"read"}})
	k, err := e.store.Roll(context.Background(), old.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fa := forwardAuthMux(t, e, ForwardAuthOptions{})
	for _, key := range []*keystore.APIKey{old, k} {
		r := httptest.NewRequest("GET", "/forward-auth?scopes=read", nil)
		r.Header = testkit.Bearer(key.Secret)
		rec := httptest.NewRecorder()
		fa.ServeHTTP(rec, r)
		if rec.Code != 200 || rec.Header().Get(HeaderKeyID) != key.ID || rec.Header().Get(HeaderKeySubject) != "org_1" {
			t.Errorf("%s: %d, %s %s", key.ID, rec.Code, rec.Header().Get(HeaderKeyID), rec.Header().Get(HeaderKeySubject))
		}
	}
}
