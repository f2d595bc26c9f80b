package adminapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
)

const fullKey = `{"name":"CI deploy","subject":"user_42","description":"deploys","claims":{"team":"infra","n":1},"scopes":["deploy:write","reports:read"],"created_by":"user_1","seconds_until_expiration":3600}`

// TestRoutes runs every route of docs/api.md on its happy path, under
// both prefixes, on a key made for the case.
func TestRoutes(t *testing.T) {
	tests := []struct {
		name   string
		method string
		path   string // {id} is the key's ID
		body   func(k *keystore.APIKey) string
		check  func(t *testing.T, e *env, k *keystore.APIKey, rec *httptest.ResponseRecorder)
	}{
		{
			name: "create", method: "POST", path: "/api_keys",
			body: func(*keystore.APIKey) string { return fullKey },
			check: func(t *testing.T, e *env, _ *keystore.APIKey, rec *httptest.ResponseRecorder) {
				k := decodeKey(t, rec)
				now := e.clock.Now().UnixMilli()
				if !strings.HasPrefix(k.Secret, "ak_") || k.Name != "CI deploy" || k.Subject != testSubject ||
					*k.Description != "deploys" || string(k.Claims) != `{"team":"infra","n":1}` ||
					strings.Join(k.Scopes, " ") != "deploy:write reports:read" || *k.CreatedBy != "user_1" ||
					k.CreatedAt != now || k.UpdatedAt != now || *k.Expiration != now+3600_000 ||
					k.Expired || k.Revoked || k.RevocationReason != nil || k.LastUsedAt != nil {
					t.Fatalf("created key %+v", k)
				}
				if _, err := e.store.Get(context.Background(), k.ID); err != nil {
					t.Fatalf("created key not in the store: %v", err)
				}
			},
		},
		{
			name: "create minimal", method: "POST", path: "/api_keys",
			body: func(*keystore.APIKey) string { return `{"name":"n","subject":"org_1"}` },
			check: func(t *testing.T, e *env, _ *keystore.APIKey, rec *httptest.ResponseRecorder) {
				raw := rec.Body.String()
				for _, want := range []string{`"scopes":[]`, `"claims":null`, `"description":null`, `"expiration":null`, `"created_by":null`, `"last_used_at":null`, `"revocation_reason":null`} {
					if !strings.Contains(raw, want) {
						t.Errorf("created key lacks %s: %s", want, raw)
					}
				}
				decodeKey(t, rec)
			},
		},
		{
			name: "list", method: "GET", path: "/api_keys?subject=user_42&limit=5",
			check: func(t *testing.T, e *env, k *keystore.APIKey, rec *httptest.ResponseRecorder) {
				l := decodeList(t, rec)
				if l.TotalCount != 1 || len(l.Data) != 1 || l.Data[0].ID != k.ID || l.Data[0].Secret != "" {
					t.Fatalf("list %s", rec.Body)
				}
			},
		},
		{
			name: "get", method: "GET", path: "/api_keys/{id}",
			check: func(t *testing.T, e *env, k *keystore.APIKey, rec *httptest.ResponseRecorder) {
				got := decodeKey(t, rec)
				if got.ID != k.ID || got.Secret != "" || bytes.Contains(rec.Body.Bytes(), []byte(`"secret"`)) {
					t.Fatalf("get %s", rec.Body)
				}
			},
		},
		{
			name: "update", method: "PATCH", path: "/api_keys/{id}",
			body: func(*keystore.APIKey) string {
				return `{"subject":"user_42","description":"new","claims":{"x":true},"scopes":["a"],"seconds_until_expiration":60}`
			},
			check: func(t *testing.T, e *env, k *keystore.APIKey, rec *httptest.ResponseRecorder) {
				got := decodeKey(t, rec)
				now := e.clock.Now().UnixMilli()
				if *got.Description != "new" || string(got.Claims) != `{"x":true}` || strings.Join(got.Scopes, ",") != "a" ||
					*got.Expiration != now+60_000 || got.UpdatedAt != now || got.CreatedAt != k.CreatedAt {
					t.Fatalf("updated key %s", rec.Body)
				}
			},
		},
		{
			name: "revoke", method: "POST", path: "/api_keys/{id}/revoke",
			body: func(*keystore.APIKey) string { return `{"revocation_reason":"leaked"}` },
			check: func(t *testing.T, e *env, k *keystore.APIKey, rec *httptest.ResponseRecorder) {
				got := decodeKey(t, rec)
				if !got.Revoked || *got.RevocationReason != "leaked" {
					t.Fatalf("revoked key %s", rec.Body)
				}
				if _, err := e.store.Verify(context.Background(), k.Secret); err != keystore.ErrRevoked {
					t.Fatalf("after revoke the store verifies with %v", err)
				}
			},
		},
		{
			name: "delete", method: "DELETE", path: "/api_keys/{id}",
			check: func(t *testing.T, e *env, k *keystore.APIKey, rec *httptest.ResponseRecorder) {
				checkJSON(t, rec)
				want := fmt.Sprintf(`{"object":"api_key","id":%q,"deleted":true}`, k.ID)
				if strings.TrimSpace(rec.Body.String()) != want {
					t.Fatalf("delete answered %s, want %s", rec.Body, want)
				}
				if _, err := e.store.Get(context.Background(), k.ID); err != keystore.ErrNotFound {
					t.Fatalf("after delete Get = %v", err)
				}
			},
		},
		{
			name: "verify", method: "POST", path: "/api_keys/verify",
			body: func(k *keystore.APIKey) string { return fmt.Sprintf(`{"secret":%q}`, k.Secret) },
			check: func(t *testing.T, e *env, k *keystore.APIKey, rec *httptest.ResponseRecorder) {
				got := decodeKey(t, rec)
				if got.ID != k.ID || got.Secret != "" || strings.Contains(rec.Body.String(), k.Secret) {
					t.Fatalf("verify %s", rec.Body)
				}
				// The verification counts as a use.
				if err := e.store.FlushLastUsed(context.Background()); err != nil {
					t.Fatal(err)
				}
				stored, _ := e.store.Get(context.Background(), k.ID)
				if stored.LastUsedAt == nil || *stored.LastUsedAt != e.clock.Now().UnixMilli() {
					t.Fatalf("last_used_at after verify: %v", stored.LastUsedAt)
				}
				if n := testkit.MetricValue(t, e.registry, "keygate_verifications_total", map[string]string{"result": "valid", "source": "api"}); n != 1 {
					t.Fatalf("keygate_verifications_total{result=valid,source=api} = %v, want 1", n)
				}
			},
		},
	}
	for _, prefix := range []string{"", "/v1"} {
		for _, tc := range tests {
			t.Run(strings.TrimSpace(strings.TrimPrefix(prefix, "/")+" "+tc.name), func(t *testing.T) {
				e := newEnv(t)
				k := e.create(t, fullKey)
				e.clock.Advance(time.Minute)
				body := ""
				if tc.body != nil {
					body = tc.body(k)
				}
				rec := e.do(tc.method, prefix+strings.ReplaceAll(tc.path, "{id}", k.ID), body)
				if rec.Code != 200 {
					t.Fatalf("%s %s: status %d, want 200: %s", tc.method, tc.path, rec.Code, rec.Body)
				}
				tc.check(t, e, k, rec)
			})
		}
	}
}

// TestUpdateTellsAbsentFromNull checks PATCH field by field: an absent
// field is kept, null clears it.
func TestUpdateTellsAbsentFromNull(t *testing.T) {
	tests := []struct {
		body  string
		check func(k *keystore.APIKey, now int64) bool
	}{
		{`{}`, func(k *keystore.APIKey, _ int64) bool {
			return *k.Description == "deploys" && k.Claims != nil && len(k.Scopes) == 2 && k.Expiration != nil
		}},
		{``, func(k *keystore.APIKey, _ int64) bool { // Clerk's SDK sends no body when there is nothing to change
			return *k.Description == "deploys" && k.Claims != nil && len(k.Scopes) == 2 && k.Expiration != nil
		}},
		{`{"description":null}`, func(k *keystore.APIKey, _ int64) bool {
			return k.Description == nil && k.Claims != nil && len(k.Scopes) == 2 && k.Expiration != nil
		}},
		{`{"description":"other"}`, func(k *keystore.APIKey, _ int64) bool { return *k.Description == "other" }},
		{`{"claims":null}`, func(k *keystore.APIKey, _ int64) bool {
			return k.Claims == nil && *k.Description == "deploys"
		}},
		{`{"claims":{"b":[1,2]}}`, func(k *keystore.APIKey, _ int64) bool { return string(k.Claims) == `{"b":[1,2]}` }},
		{`{"scopes":[]}`, func(k *keystore.APIKey, _ int64) bool { return len(k.Scopes) == 0 && k.Scopes != nil }},
		{`{"scopes":null}`, func(k *keystore.APIKey, _ int64) bool { return len(k.Scopes) == 0 && k.Scopes != nil }},
		{`{"seconds_until_expiration":null}`, func(k *keystore.APIKey, _ int64) bool {
			return k.Expiration == nil && !k.Expired && *k.Description == "deploys"
		}},
		{`{"seconds_until_expiration":7200}`, func(k *keystore.APIKey, now int64) bool {
			return *k.Expiration == now+7200_000
		}},
		{`{"subject":"user_42"}`, func(k *keystore.APIKey, _ int64) bool { return k.Subject == testSubject }},
		{`{"subject":null}`, func(k *keystore.APIKey, _ int64) bool { return k.Subject == testSubject }},
	}
	for _, tc := range tests {
		t.Run(tc.body, func(t *testing.T) {
			e := newEnv(t)
			k := e.create(t, fullKey)
			e.clock.Advance(time.Second)
			rec := e.do("PATCH", "/api_keys/"+k.ID, tc.body)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			got := decodeKey(t, rec)
			now := e.clock.Now().UnixMilli()
			if !tc.check(got, now) || got.UpdatedAt != now {
				t.Fatalf("after PATCH %s: %s", tc.body, rec.Body)
			}
			stored, err := e.store.Get(context.Background(), k.ID)
			if err != nil || !tc.check(stored, now) {
				t.Fatalf("stored after PATCH %s: %+v %v", tc.body, stored, err)
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	tests := []struct {
		name   string
		bodies []string // sent in turn
		reason *string  // revocation_reason at the end
	}{
		{"empty body", []string{""}, nil},
		{"null reason, as Clerk's SDK sends by default", []string{`{"revocation_reason":null}`}, nil},
		{"empty reason is no reason", []string{`{"revocation_reason":""}`}, nil},
		{"reason", []string{`{"revocation_reason":"leaked in CI"}`}, ptr("leaked in CI")},
		{"twice keeps the first reason", []string{`{"revocation_reason":"first"}`, `{"revocation_reason":"second"}`}, ptr("first")},
		{"twice, first without reason", []string{``, `{"revocation_reason":"second"}`}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			k := e.create(t, fullKey)
			var got *keystore.APIKey
			for _, b := range tc.bodies {
				e.clock.Advance(time.Second)
				rec := e.do("POST", "/api_keys/"+k.ID+"/revoke", b)
				if rec.Code != 200 {
					t.Fatalf("revoke %q: %d %s", b, rec.Code, rec.Body)
				}
				got = decodeKey(t, rec)
			}
			if !got.Revoked || fmt.Sprint(deref(got.RevocationReason)) != fmt.Sprint(deref(tc.reason)) {
				t.Fatalf("revoked key %+v, want reason %v", got, deref(tc.reason))
			}
		})
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	var ids []string // creation order
	for i, spec := range []string{
		`{"name":"Alpha one","subject":"user_a"}`,
		`{"name":"alpha two","subject":"user_a"}`,
		`{"name":"beta","subject":"user_a"}`,
		`{"name":"gamma","subject":"user_b"}`,
		`{"name":"to revoke","subject":"user_a"}`,
		`{"name":"to expire","subject":"user_a","seconds_until_expiration":1}`,
	} {
		k := e.create(t, spec)
		ids = append(ids, k.ID)
		e.clock.Advance(time.Duration(i+1) * time.Millisecond)
	}
	if rec := e.do("POST", "/api_keys/"+ids[4]+"/revoke", ""); rec.Code != 200 {
		t.Fatal(rec.Body)
	}
	e.clock.Advance(time.Second) // ids[5] expires: its expiration is now in the past

	tests := []struct {
		query string
		want  []int // indexes into ids, newest first
		total int
	}{
		{"", []int{3, 2, 1, 0}, 4},
		{"?subject=user_a", []int{2, 1, 0}, 3},
		{"?subject=user_b", []int{3}, 1},
		{"?subject=nobody", []int{}, 0},
		{"?include_invalid=true", []int{5, 4, 3, 2, 1, 0}, 6},
		{"?include_invalid=false&subject=user_a", []int{2, 1, 0}, 3},
		{"?subject=user_a&include_invalid=true&limit=2", []int{5, 4}, 5},
		{"?subject=user_a&include_invalid=true&limit=2&offset=2", []int{2, 1}, 5},
		{"?subject=user_a&include_invalid=true&limit=2&offset=4", []int{0}, 5},
		{"?include_invalid=true&offset=100", []int{}, 6},
		{"?query=ALPHA", []int{1, 0}, 2},
		{"?query=alpha&limit=1", []int{1}, 2},
		{"?query=to&include_invalid=true", []int{5, 4}, 2},
		{"?type=api_key&limit=100", []int{3, 2, 1, 0}, 4},
		{"?limit=1&offset=0&unknown=ignored", []int{3}, 4},
	}
	for _, tc := range tests {
		for _, prefix := range []string{"", "/v1"} {
			t.Run(prefix+tc.query, func(t *testing.T) {
				l := decodeList(t, e.do("GET", prefix+"/api_keys"+tc.query, ""))
				var got []string
				for _, k := range l.Data {
					got = append(got, k.ID)
				}
				var want []string
				for _, i := range tc.want {
					want = append(want, ids[i])
				}
				if strings.Join(got, ",") != strings.Join(want, ",") || l.TotalCount != tc.total {
					t.Fatalf("got %v total %d, want %v total %d", got, l.TotalCount, want, tc.total)
				}
			})
		}
	}
}

// TestLifecycleOnRedisServer runs the whole life of a key through the API
// on a real redis-server.
func TestLifecycleOnRedisServer(t *testing.T) {
	e := newEnvOn(t, nil, redistest.Server(t))
	k := e.create(t, fullKey)
	steps := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"GET", "/api_keys?subject=user_42", "", 200, ""},
		{"GET", "/v1/api_keys/" + k.ID, "", 200, ""},
		{"PATCH", "/api_keys/" + k.ID, `{"description":null,"scopes":["x"]}`, 200, ""},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret), 200, ""},
		{"GET", "/api_keys/" + k.ID + "/secret", "", 404, "api_key_secret_unavailable"},
		{"POST", "/api_keys/" + k.ID + "/revoke", `{"revocation_reason":"done"}`, 200, ""},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret), 404, "api_key_revoked"},
		{"DELETE", "/api_keys/" + k.ID, "", 200, ""},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret), 404, "api_key_not_found"},
		{"GET", "/api_keys/" + k.ID, "", 404, "resource_not_found"},
	}
	for _, s := range steps {
		rec := e.do(s.method, s.path, s.body)
		if rec.Code != s.status {
			t.Fatalf("%s %s: %d %s", s.method, s.path, rec.Code, rec.Body)
		}
		if s.code != "" {
			if got := decodeError(t, rec); got.Code != s.code {
				t.Fatalf("%s %s: code %s, want %s", s.method, s.path, got.Code, s.code)
			}
		} else {
			checkJSON(t, rec)
		}
	}
}

// TestNewRefusesIncompleteOptions also covers short admin tokens: one
// under 32 characters is refused, named by its place, never shown.
func TestNewRefusesIncompleteOptions(t *testing.T) {
	_, rdb := redistest.Mini(t)
	store, verifier := keystoretest.New(t, rdb, keystore.Options{LastUsedFlush: -1}, keystore.VerifierOptions{})
	tests := []struct {
		name string
		opts adminapi.Options
		want string
	}{
		{"no store", adminapi.Options{Verifier: verifier, AdminTokens: []string{adminToken}}, "Store"},
		{"no verifier", adminapi.Options{Store: store, AdminTokens: []string{adminToken}}, "Verifier"},
		{"no tokens", adminapi.Options{Store: store, Verifier: verifier}, "token"},
		{"only empty tokens", adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{"", ""}}, "token"},
		{"a short token", adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{adminToken, "", strings.Repeat("x", 31)}},
			"admin token 2 has 31 characters; each needs at least 32"},
		{"a short token of multibyte characters", adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{strings.Repeat("é", 20)}},
			"admin token 1 has 20 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := adminapi.New(tc.opts)
			if err == nil || h != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, %v; want an error about %s", h, err, tc.want)
			}
		})
	}
	t.Run("zero-value logger and registerer", func(t *testing.T) {
		h, err := adminapi.New(adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{strings.Repeat("x", 32)}})
		if err != nil || h == nil {
			t.Fatalf("New = %v, %v", h, err)
		}
	})
}

func ptr(s string) *string { return &s }

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}
