package sidecar

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
)

// FuzzForwardAuth sends the forward-auth handler any method, path, query
// and headers (throttling on, behind trusted proxies). "{secret}" and
// "{revoked}" in a header stand for a valid key's secret and a revoked
// one's. Whatever comes in: no panic, never 400 (nginx would make it a
// 500), never 503 (the store is up), and 200 only for a request that
// carries the valid secret, holds every required scope, and then with
// that key's identity and nothing else.
func FuzzForwardAuth(f *testing.F) {
	_, rdb := redistest.Mini(f)
	quiet := slog.New(slog.DiscardHandler)
	store, v := keystoretest.New(f, rdb, keystore.Options{LastUsedFlush: -1, Logger: quiet}, keystore.VerifierOptions{Logger: quiet})
	ctx := context.Background()
	valid, err := store.Create(ctx, keystore.CreateParams{Name: "n\x01", Subject: "user_fa",
		Scopes: []string{"reports:read", "reports:write"}, Claims: json.RawMessage(`{"a":"\u007f"}`)})
	if err != nil {
		f.Fatal(err)
	}
	revoked, err := store.Create(ctx, keystore.CreateParams{Name: "r", Subject: "user_fa"})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := store.Revoke(ctx, revoked.ID, nil); err != nil {
		f.Fatal(err)
	}
	fa, err := NewForwardAuth(v, ForwardAuthOptions{Logger: quiet, KeyLookup: "header:Authorization:Bearer ,header:X-API-Key,query:api_key",
		Throttle: ThrottleOptions{FailuresPerMinute: 600, Burst: 5,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}}})
	if err != nil {
		f.Fatal(err)
	}

	type seed struct {
		method                                 uint8
		path, query, auth, apiKey, need, fwURI string
		xff, remote                            string
	}
	for _, s := range []seed{
		{0, "/forward-auth", "", "Bearer {secret}", "", "", "", "", "127.0.0.1:1"},
		{1, "/forward-auth/api/x", "scopes=reports:read,reports:write", "bearer {secret}", "", "", "/api/x?y=1", "198.51.100.1", "127.0.0.1:1"},
		{0, "/forward-auth", "scopes=admin", "Bearer {secret}", "", "", "", "", "127.0.0.1:1"},
		{0, "/forward-auth", "scopes=%zz&scopes=reports%3Aread", "Bearer {secret}", "", "reports:write admin", "", "", "127.0.0.1:1"},
		{0, "/forward-auth", "", "Bearer {revoked}", "", "", "", "198.51.100.9", "10.0.0.1:9"},
		{0, "/forward-auth", "", "Basic Zm9vOmJhcg==", "{secret}", "", "", "", "127.0.0.1:1"},
		{0, "/forward-auth", "", "", "{secret}", "reports:read", "", "6.6.6.6, 127.0.0.2", "127.0.0.1:1"},
		{0, "/forward-auth", "", "", "", "", "/x?api_key={secret}", "", "127.0.0.1:1"},
		{0, "/forward-auth", "", "Bearer ak_garbage", "", "", "", "not-an-ip", "[::1]:1"},
		{2, "/forward-auth/", "scopes=", "Bearer  {secret}  ", "", ",, ,", "", "", "@"},
		{3, "/forward-auth", "", "Bearer {secret}x", "", "", "", "", "garbage"},
	} {
		f.Add(s.method, s.path, s.query, s.auth, s.apiKey, s.need, s.fwURI, s.xff, s.remote)
	}
	methods := []string{"GET", "POST", "HEAD", "DELETE", "OPTIONS", "PUT"}
	expand := strings.NewReplacer("{secret}", valid.Secret, "{revoked}", revoked.Secret)
	f.Fuzz(func(t *testing.T, method uint8, path, rawQuery, auth, apiKey, need, fwURI, xff, remote string) {
		auth, apiKey, fwURI = expand.Replace(auth), expand.Replace(apiKey), expand.Replace(fwURI)
		req := httptest.NewRequest("GET", "/forward-auth", strings.NewReader("body never read"))
		req.Method = methods[int(method)%len(methods)]
		req.URL.Path, req.URL.RawQuery = path, rawQuery
		req.RemoteAddr = remote
		for name, v := range map[string]string{"Authorization": auth, "X-Api-Key": apiKey, HeaderRequiredScopes: need,
			"X-Forwarded-Uri": fwURI, "X-Forwarded-For": xff} {
			if v != "" {
				req.Header[name] = []string{v}
			}
		}
		rec := httptest.NewRecorder()
		fa.ServeHTTP(rec, req)
		h := rec.Header()
		what := req.Method + " " + path + "?" + rawQuery + " " + strings.Join([]string{auth, apiKey, need, fwURI, xff, remote}, " | ")

		if rec.Code != 200 {
			switch rec.Code {
			case 401, 403, 429:
			default:
				t.Fatalf("%s: status %d, want 200, 401, 403 or 429", what, rec.Code)
			}
			if h.Get(HeaderKeyID) != "" || h.Get(HeaderKeySubject) != "" {
				t.Fatalf("%s: %d with identity headers", what, rec.Code)
			}
			if h.Get("Content-Type") != "application/json" || !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s: %d without the JSON error body: %q", what, rec.Code, rec.Body)
			}
			if rec.Code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), `Bearer realm="keygate"`) {
				t.Fatalf("%s: 401 without a challenge", what)
			}
			if rec.Code == 429 && h.Get("Retry-After") == "" {
				t.Fatalf("%s: 429 without Retry-After", what)
			}
			if rec.Code == 429 && strings.Contains(auth+apiKey+fwURI, valid.Secret) {
				// A valid key is never throttled: only a refusal is turned
				// into 429, and this request may still be refused (it
				// carries more than the key, or another source first).
				assertRefusedAnyway(t, v, req, what)
			}
			return
		}
		carried := strings.Contains(auth, valid.Secret) || strings.Contains(apiKey, valid.Secret) || strings.Contains(fwURI, valid.Secret)
		if !carried {
			t.Fatalf("%s: 200 without the valid secret", what)
		}
		if h.Get(HeaderKeyID) != valid.ID || h.Get(HeaderKeySubject) != "user_fa" || rec.Body.Len() != 0 {
			t.Fatalf("%s: 200 with identity %v and body %q", what, h, rec.Body)
		}
		for _, s := range wantedScopes(rawQuery, need) {
			if !slices.Contains(valid.Scopes, s) {
				t.Fatalf("%s: 200 although scope %q is required", what, s)
			}
		}
	})
}

// assertRefusedAnyway checks that a request answered 429 would have been
// refused without throttling too.
func assertRefusedAnyway(t *testing.T, v *keystore.Verifier, req *http.Request, what string) {
	t.Helper()
	fa, err := NewForwardAuth(v, ForwardAuthOptions{Logger: slog.New(slog.DiscardHandler),
		KeyLookup: "header:Authorization:Bearer ,header:X-API-Key,query:api_key"})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req.Body = io.NopCloser(strings.NewReader(""))
	fa.ServeHTTP(rec, req)
	if rec.Code == 200 {
		t.Fatalf("%s: 429 for a request that verifies: a valid key must never be throttled", what)
	}
}

// wantedScopes lists the scopes a forward-auth request requires, read
// from the README ("Forward-auth"): ?scopes= and X-Required-Scopes, comma or space
// separated, added up.
func wantedScopes(rawQuery, header string) []string {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' })
	}
	out := split(header)
	for _, pair := range strings.Split(rawQuery, "&") {
		name, value, _ := strings.Cut(pair, "=")
		if name != "scopes" {
			continue
		}
		if u, err := url.QueryUnescape(value); err == nil {
			value = u
		}
		out = append(out, split(value)...)
	}
	return out
}
