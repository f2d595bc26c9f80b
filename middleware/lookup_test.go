package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/echomw"
)

func TestParseKeyLookup(t *testing.T) {
	tests := []struct {
		in      string
		headers []string
		query   []string
		wantErr bool
	}{
		{in: "", headers: []string{"Authorization", "X-Api-Key"}},
		{in: middleware.DefaultKeyLookup + ", query:api_key", headers: []string{"Authorization", "X-Api-Key"}, query: []string{"api_key"}},
		{in: "header:x-api-key", headers: []string{"X-Api-Key"}},
		{in: "form:api_key", wantErr: true},
		{in: "cookie:api_key", wantErr: true},
		{in: "param:key", wantErr: true},
		{in: "query:api_key:Bearer ", wantErr: true},
		{in: "header:", wantErr: true},
		{in: "header", wantErr: true},
		{in: "header:Authorization,", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			kl, err := middleware.ParseKeyLookup(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if !slices.Equal(kl.Headers(), tc.headers) || !slices.Equal(kl.QueryParams(), tc.query) {
				t.Errorf("headers %q, query %q; want %q, %q", kl.Headers(), kl.QueryParams(), tc.headers, tc.query)
			}
		})
	}
}

func TestKeyLookupKey(t *testing.T) {
	tests := []struct {
		lookup string
		header []string
		target string
		want   string
	}{
		{middleware.DefaultKeyLookup, []string{"Authorization", "Bearer k1"}, "/", "k1"},
		{middleware.DefaultKeyLookup, []string{"Authorization", "bEaReR k1"}, "/", "k1"},
		{middleware.DefaultKeyLookup, []string{"Authorization", "Bearer"}, "/", ""},
		{middleware.DefaultKeyLookup, []string{"Authorization", "Bearerk1"}, "/", ""},
		{middleware.DefaultKeyLookup, []string{"Authorization", "Basic k1", "X-Api-Key", "k2"}, "/", "k2"},
		{middleware.DefaultKeyLookup, []string{"Authorization", "Bearer  ", "X-Api-Key", " k2 "}, "/", "k2"},
		{middleware.DefaultKeyLookup, []string{"Authorization", "Bearer k1", "X-Api-Key", "k2"}, "/", "k1"},
		{middleware.DefaultKeyLookup, nil, "/?api_key=k3", ""},
		{"query:api_key," + middleware.DefaultKeyLookup, []string{"Authorization", "Bearer k1"}, "/?api_key=k3", "k3"},
		{"header:Authorization", []string{"Authorization", "Bearer k1"}, "/", "k1"},
		{"header:Authorization:", []string{"Authorization", "k1"}, "/", "k1"},
		{"header:Authorization:Token ", []string{"Authorization", "token k1"}, "/", "k1"},
		{"header:Authorization:Token ", []string{"Authorization", "Bearer k1"}, "/", ""},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s %q %s", tc.lookup, tc.header, tc.target), func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			for i := 0; i+1 < len(tc.header); i += 2 {
				r.Header.Add(tc.header[i], tc.header[i+1])
			}
			if got := middleware.MustParseKeyLookup(tc.lookup).Key(r); got != tc.want {
				t.Errorf("Key = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEchoPanicsOnBadConfig(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Echo accepted a form key lookup")
		}
	}()
	e := newEnv(t, mini)
	echomw.New(e.v, echomw.Config{KeyLookup: "form:api_key"})
}

func TestStatusAndChallenge(t *testing.T) {
	tests := []struct {
		err       error
		status    int
		challenge string
	}{
		{keystore.ErrMissing, 401, missingChallenge},
		{fmt.Errorf("verifying: %w", keystore.ErrRevoked), 401, invalidChallenge},
		{&keystore.ScopeError{Required: []string{"a", "b"}}, 403, scopeChallenge("a b")},
		{&keystore.ScopeError{Required: []string{`we"ird\`}}, 403, scopeChallenge(`we\"ird\\`)},
		{fmt.Errorf("loading: %w", keystore.ErrUnavailable), 503, ""},
		{errors.New("something else"), 503, ""}, // not an outcome: fail closed
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			if got := middleware.Status(tc.err); got != tc.status {
				t.Errorf("Status = %d, want %d", got, tc.status)
			}
			if got := middleware.Challenge(tc.err); got != tc.challenge {
				t.Errorf("Challenge = %q, want %q", got, tc.challenge)
			}
		})
	}
}

func TestFromContext(t *testing.T) {
	key := &keystore.APIKey{ID: "ak_1"}
	tests := []struct {
		name string
		ctx  context.Context
		want *keystore.APIKey
	}{
		{"empty", context.Background(), nil},
		{"nil key", middleware.NewContext(context.Background(), nil), nil},
		{"key", middleware.NewContext(context.Background(), key), key},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := middleware.FromContext(tc.ctx)
			if got != tc.want || ok != (tc.want != nil) {
				t.Errorf("FromContext = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}
