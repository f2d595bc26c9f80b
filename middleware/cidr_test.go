package middleware_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/keygate/keygate/keystore"
)

// TestAllowedCIDRs sends a key restricted to 203.0.113.0/24 through both
// middlewares from direct peers, through trusted proxies (10.0.0.0/8) and
// with spoofed X-Forwarded-For, and a disabled key.
func TestAllowedCIDRs(t *testing.T) {
	e := newEnv(t, mini)
	ctx := context.Background()
	k, err := e.store.Create(ctx, keystore.CreateParams{Name: "office", Subject: "user_office", AllowedCIDRs: []string{"203.0.113.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	e.secrets["office"] = k.Secret
	d, err := e.store.Create(ctx, keystore.CreateParams{Name: "disabled", Subject: "user_disabled", Enabled: new(false)})
	if err != nil {
		t.Fatal(err)
	}
	e.secrets["disabled"] = d.Secret
	cfg := config{proxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	allowed := response{status: 200, subject: "user_office"}
	refused := response{status: 403, code: "api_key_ip_not_allowed"}
	xff := func(v string) []string { return append(bearer("office"), "X-Forwarded-For", v) }
	for _, tc := range []struct {
		name string
		req  request
		want response
	}{
		{"direct peer inside", request{header: bearer("office"), remote: "203.0.113.7:5000"}, allowed},
		{"direct peer outside", request{header: bearer("office"), remote: "192.0.2.1:5000"}, refused},
		{"untrusted peer claiming an address inside", request{header: xff("203.0.113.7"), remote: "192.0.2.1:5000"}, refused},
		{"trusted proxy for a client inside", request{header: xff("203.0.113.7"), remote: "10.0.0.5:5000"}, allowed},
		{"trusted proxies, two hops", request{header: xff("203.0.113.7, 10.0.0.9"), remote: "10.0.0.5:5000"}, allowed},
		{"spoofed entry left of the real client", request{header: xff("203.0.113.7, 198.51.100.9"), remote: "10.0.0.5:5000"}, refused},
		{"trusted proxy without the header", request{header: bearer("office"), remote: "10.0.0.5:5000"}, refused},
		{"not an IP peer", request{header: bearer("office"), remote: "@"}, refused},
		{"a key without CIDRs from anywhere", request{header: bearer("reader"), remote: "192.0.2.1:5000"}, response{status: 200, subject: "user_reader"}},
		{"disabled", request{header: bearer("disabled"), remote: "203.0.113.7:5000"}, response{status: 401, challenge: invalidChallenge, code: "api_key_disabled"}},
	} {
		for _, s := range stacks {
			t.Run(s.name+"/"+tc.name, func(t *testing.T) {
				tc.want.check(t, s.name, serve(s.build(e.v, cfg), tc.req.build(e)))
			})
		}
	}
	got := e.middlewareVerifications(t)
	if got["ip_not_allowed"] == 0 || got["disabled"] == 0 {
		t.Errorf("verifications by result %v: want ip_not_allowed and disabled counted", got)
	}
}
