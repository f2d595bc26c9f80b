package client_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/client"
)

// roundTripper records the requests a client sends through it.
type roundTripper struct {
	seen []*http.Request
}

func (rt *roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.seen = append(rt.seen, r)
	return http.DefaultTransport.RoundTrip(r)
}

// TestOptions: every request goes through the http.Client given with
// WithHTTPClient and carries the User-Agent given with WithUserAgent, or
// "keygate-client" without it.
func TestOptions(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts []client.Option
		want string
	}{
		{"default User-Agent", nil, "keygate-client"},
		{"WithUserAgent", []client.Option{client.WithUserAgent("billing-service/2.1")}, "billing-service/2.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := &roundTripper{}
			c, err := client.New(s.url, adminToken, append(tc.opts, client.WithHTTPClient(&http.Client{Transport: rt}))...)
			if err != nil {
				t.Fatal(err)
			}
			k, err := c.Create(ctx, keystore.CreateParams{Name: "n", Subject: "org_1"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
			if len(rt.seen) != 2 {
				t.Fatalf("the http.Client given with WithHTTPClient sent %d requests, want 2", len(rt.seen))
			}
			for _, r := range rt.seen {
				if ua := r.Header.Get("User-Agent"); ua != tc.want {
					t.Errorf("%s %s: User-Agent %q, want %q", r.Method, r.URL.Path, ua, tc.want)
				}
			}
		})
	}
}
