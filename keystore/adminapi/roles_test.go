package adminapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/redis/go-redis/v9"
)

// One token of each role, as a token file names them.
const tokenFile = `
# name   role    token
root     admin   kg-root-0a6f3c9e1d7b2f4a8c5e0d3b6a9f
ops      manage  kg-ops-5b8e2d1c7f4a0e9b3d6c2f8a1e7d
auditor  read    kg-read-9c3f7a2e5d1b8f4c0a6e3d9b2f5a
gateway  verify  kg-verify-4e1a8d6c3f9b2e7a5d0c8f3b6e1a
`

func namedTokens(t *testing.T) map[adminapi.Role]string {
	t.Helper()
	tokens, err := adminapi.ParseTokenFile(strings.NewReader(tokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := adminapi.CheckTokens(tokens); err != nil {
		t.Fatal(err)
	}
	out := map[adminapi.Role]string{}
	for _, tok := range tokens {
		out[tok.Role] = tok.Token
	}
	return out
}

// newAuditedEnv is the admin API on a real redis-server, with the token
// file's tokens and an audit log.
func newAuditedEnv(t *testing.T) (*env, *audit.Log) {
	t.Helper()
	rdb := redistest.Server(t)
	tokens, _ := adminapi.ParseTokenFile(strings.NewReader(tokenFile))
	var log *audit.Log
	e := newEnvOn(t, nil, rdb, func(e *env, o *adminapi.Options) {
		log = audit.New(rdb, audit.Options{Now: e.clock.Now})
		o.Tokens, o.Audit = tokens, log
	})
	return e, log
}

// stored is every Redis key and value but the invalidation protocol's
// (which verifiers change in the background), to show that a call changed
// nothing.
func stored(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		if strings.Contains(k, "{inv}") {
			continue
		}
		v, err := rdb.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%q\n", k, v)
	}
	return b.String()
}

// TestEveryRoleAgainstEveryRoute calls each route with a token of each
// role: the role's routes answer as they do for an admin, the others 403
// authorization_invalid, and a 403 leaves Redis, audit log included,
// exactly as it was.
func TestEveryRoleAgainstEveryRoute(t *testing.T) {
	e, _ := newAuditedEnv(t)
	tokens := namedTokens(t)
	routes := []struct {
		method, path, body string
		roles              []adminapi.Role // that may call it
		status             int             // when allowed
	}{
		{"GET", "/v1/api_keys", "", []adminapi.Role{"admin", "manage", "read"}, 200},
		{"GET", "/api_keys/{id}", "", []adminapi.Role{"admin", "manage", "read"}, 200},
		{"GET", "/v1/api_keys/{id}/usage", "", []adminapi.Role{"admin", "manage", "read"}, 200},
		{"GET", "/v1/api_keys/{id}/secret", "", []adminapi.Role{"admin", "manage", "read"}, 404},
		{"GET", "/v1/audit_events", "", []adminapi.Role{"admin", "manage", "read"}, 200},
		{"POST", "/v1/api_keys", `{"name":"new","subject":"user_42"}`, []adminapi.Role{"admin", "manage"}, 200},
		{"PATCH", "/v1/api_keys/{id}", `{"scopes":["reports:write"]}`, []adminapi.Role{"admin", "manage"}, 200},
		{"POST", "/v1/api_keys/{id}/revoke", `{"revocation_reason":"leaked"}`, []adminapi.Role{"admin", "manage"}, 200},
		{"DELETE", "/v1/api_keys/{id}", "", []adminapi.Role{"admin"}, 200},
		{"DELETE", "/api_keys/{id}", "", []adminapi.Role{"admin"}, 200},
		{"POST", "/v1/api_keys/verify", `{"secret":"{secret}"}`, []adminapi.Role{"admin", "manage", "verify"}, 200},
	}
	for _, rt := range routes {
		for _, role := range []adminapi.Role{adminapi.RoleAdmin, adminapi.RoleManage, adminapi.RoleRead, adminapi.RoleVerify} {
			t.Run(string(role)+" "+rt.method+" "+rt.path, func(t *testing.T) {
				k := e.create(t, `{"name":"k","subject":"user_42","scopes":["reports:read"]}`)
				path := strings.ReplaceAll(rt.path, "{id}", k.ID)
				body := strings.ReplaceAll(rt.body, "{secret}", k.Secret)
				before := stored(t, e.rdb)
				rec := e.do(rt.method, path, body, "Authorization", "Bearer "+tokens[role])
				if slices.Contains(rt.roles, role) {
					if rec.Code != rt.status {
						t.Fatalf("%s may call it: %d %s, want %d", role, rec.Code, rec.Body, rt.status)
					}
					return
				}
				got := decodeError(t, rec)
				if got.Status != 403 || got.Code != "authorization_invalid" || !strings.Contains(got.Long, string(role)) {
					t.Fatalf("%s may not call it: got %+v, want 403 authorization_invalid naming the role", role, got)
				}
				if after := stored(t, e.rdb); after != before {
					t.Fatalf("a 403 changed Redis:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	}
}

// TestRoleChecksComeAfterAuthenticationAndRouting: a wrong token is 401,
// an unknown route 404 and a wrong method 405 whatever the role.
func TestRoleChecksComeAfterAuthenticationAndRouting(t *testing.T) {
	e, _ := newAuditedEnv(t)
	verify := namedTokens(t)[adminapi.RoleVerify]
	for _, tc := range []struct {
		method, path, token string
		status              int
	}{
		{"DELETE", "/v1/api_keys/ak_x", "wrong-token-of-thirty-two-characters", 401},
		{"GET", "/v1/nothing", verify, 404},
		{"PUT", "/v1/api_keys", verify, 405},
		{"DELETE", "/v1/audit_events", verify, 405},
	} {
		if rec := e.do(tc.method, tc.path, "", "Authorization", "Bearer "+tc.token); rec.Code != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.status)
		}
	}
	// The log names the token, never the token itself.
	e.do("DELETE", "/v1/api_keys/ak_x", "", "Authorization", "Bearer "+verify)
	logs := e.logs.String()
	if !strings.Contains(logs, `"actor":"gateway"`) || strings.Contains(logs, verify) {
		t.Fatalf("log lines: %s", logs)
	}
}

func TestTokenFile(t *testing.T) {
	for _, tc := range []struct{ name, file, err string }{
		{"too few fields", "ci admin\n", "line 1: want NAME ROLE TOKEN"},
		{"unknown role", "ci owner kg-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", `role "owner"`},
		{"short token", "# tokens\n\nci admin short-token\n", "token ci has 11 characters"},
		{"same name twice", "ci admin kg-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nci read kg-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n", "name ci is given twice"},
		{"same token twice", "a admin kg-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\nb read kg-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", "tokens a and b are the same token"},
		{"bad name", "c/i admin kg-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", "token name"},
		{"empty", "# nothing\n", "no token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokens, err := adminapi.ParseTokenFile(strings.NewReader(tc.file))
			if err == nil {
				err = adminapi.CheckTokens(tokens)
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "kg-") {
				t.Fatalf("the error repeats a token: %v", err)
			}
		})
	}
	// Bare tokens are admins named token-1, token-2, … and may sit beside
	// named ones.
	bare := adminapi.BareTokens([]string{"", "kg-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "kg-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"})
	if b, _ := json.Marshal(bare); len(bare) != 2 || bare[0].Name != "token-1" || bare[1].Name != "token-2" || bare[1].Role != adminapi.RoleAdmin {
		t.Fatalf("bare tokens: %s", b)
	}
}
