package adminapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// errorCase is one request that must fail with the given status and code.
type errorCase struct {
	name    string
	prep    func(t *testing.T, e *env, k *keystore.APIKey) // before the request
	method  string
	path    string // {id} is the key's ID
	body    string // {secret} is the key's secret
	headers []string
	status  int
	code    string
	param   string // meta.param_name, "" when none is expected
	long    string // a substring of long_message
	allow   string // the Allow header of a 405
}

var unknownID = "ak_" + strings.Repeat("0", 32)

const traceID = "trace-7f3a91"

func errorCases() []errorCase {
	noAuth := []string{"Authorization", ""}
	var cases []errorCase

	// 401 on every route, before routing and method checks.
	for _, r := range []struct{ method, path string }{
		{"GET", "/api_keys"}, {"POST", "/api_keys"}, {"GET", "/api_keys/{id}"}, {"PATCH", "/api_keys/{id}"},
		{"DELETE", "/api_keys/{id}"}, {"POST", "/api_keys/{id}/revoke"}, {"POST", "/api_keys/verify"},
		{"GET", "/api_keys/{id}/secret"}, {"GET", "/api_keys/no/such/route"}, {"PUT", "/api_keys"},
	} {
		cases = append(cases, errorCase{name: "no token " + r.method + " " + r.path, method: r.method, path: r.path,
			body: `{"name":"n","subject":"s"}`, headers: noAuth, status: 401, code: "authentication_invalid"})
	}
	for _, h := range []string{
		"Bearer wrong", "Bearer " + adminToken[:len(adminToken)-1], "Bearer " + adminToken + "x",
		"Basic " + adminToken, "Bearer", "Bearer ", adminToken, "Token " + adminToken,
	} {
		cases = append(cases, errorCase{name: "bad Authorization " + h, method: "GET", path: "/api_keys",
			headers: []string{"Authorization", h}, status: 401, code: "authentication_invalid"})
	}

	cases = append(cases,
		// 400 form_param_missing and form_param_invalid: from the store's validation.
		errorCase{name: "create without name", method: "POST", path: "/api_keys", body: `{"subject":"s"}`,
			status: 400, code: "form_param_missing", param: "name", long: "name is missing"},
		errorCase{name: "create with empty body", method: "POST", path: "/api_keys", body: ``,
			status: 400, code: "form_param_missing", param: "name"},
		errorCase{name: "create with null name", method: "POST", path: "/api_keys", body: `{"name":null,"subject":"s"}`,
			status: 400, code: "form_param_missing", param: "name"},
		errorCase{name: "create without subject", method: "POST", path: "/api_keys", body: `{"name":"n"}`,
			status: 400, code: "form_param_missing", param: "subject"},
		errorCase{name: "create with a bad scope", method: "POST", path: "/api_keys",
			body:   `{"name":"n","subject":"s","scopes":["a","b","c d"]}`,
			status: 400, code: "form_param_invalid", param: "scopes", long: "scopes[2] must match [A-Za-z0-9:._/*-]{1,128}"},
		errorCase{name: "create with another type", method: "POST", path: "/api_keys", body: `{"name":"n","subject":"s","type":"m2m"}`,
			status: 400, code: "form_param_invalid", param: "type"},
		errorCase{name: "create with a long name", method: "POST", path: "/api_keys", body: fmt.Sprintf(`{"name":%q,"subject":"s"}`, strings.Repeat("n", 257)),
			status: 400, code: "form_param_invalid", param: "name"},
		errorCase{name: "create with array claims", method: "POST", path: "/api_keys", body: `{"name":"n","subject":"s","claims":[1]}`,
			status: 400, code: "form_param_invalid", param: "claims"},
		errorCase{name: "update with another subject", method: "PATCH", path: "/api_keys/{id}", body: `{"subject":"user_other"}`,
			status: 400, code: "form_param_invalid", param: "subject"},
		errorCase{name: "update with string claims", method: "PATCH", path: "/api_keys/{id}", body: `{"claims":"x"}`,
			status: 400, code: "form_param_invalid", param: "claims"},
		errorCase{name: "revoke with a long reason", method: "POST", path: "/api_keys/{id}/revoke",
			body:   fmt.Sprintf(`{"revocation_reason":%q}`, strings.Repeat("r", 1025)),
			status: 400, code: "form_param_invalid", param: "revocation_reason"},
		errorCase{name: "verify without secret", method: "POST", path: "/api_keys/verify", body: `{}`,
			status: 400, code: "form_param_missing", param: "secret"},
		errorCase{name: "verify with empty body", method: "POST", path: "/api_keys/verify", body: ``,
			status: 400, code: "form_param_missing", param: "secret"},
	)
	for _, s := range []string{"0", "-1", "1000000000000"} {
		cases = append(cases,
			errorCase{name: "create seconds_until_expiration " + s, method: "POST", path: "/api_keys",
				body:   `{"name":"n","subject":"s","seconds_until_expiration":` + s + `}`,
				status: 400, code: "form_param_invalid", param: "seconds_until_expiration"},
			errorCase{name: "update seconds_until_expiration " + s, method: "PATCH", path: "/api_keys/{id}",
				body:   `{"seconds_until_expiration":` + s + `}`,
				status: 400, code: "form_param_invalid", param: "seconds_until_expiration"})
	}
	for _, q := range []struct{ query, param string }{
		{"limit=0", "limit"}, {"limit=101", "limit"}, {"limit=-1", "limit"}, {"limit=abc", "limit"}, {"limit=", "limit"},
		{"limit=99999999999999999999999", "limit"}, {"limit=1.5", "limit"},
		{"offset=-1", "offset"}, {"offset=x", "offset"}, {"offset=99999999999999999999999", "offset"},
		{"offset=9223372036854775807", "offset"}, {"offset=2147483648", "offset"},
		{"include_invalid=yes", "include_invalid"}, {"include_invalid=", "include_invalid"}, {"include_invalid=1", "include_invalid"},
		{"type=m2m", "type"}, {"query=%ff", "query"}, {"subject=%ff%fe", "subject"},
	} {
		cases = append(cases, errorCase{name: "list " + q.query, method: "GET", path: "/api_keys?" + q.query,
			status: 400, code: "form_param_invalid", param: q.param, long: q.param})
	}

	// 400 request_body_invalid: not JSON, wrong types, unknown fields.
	for _, b := range []struct{ name, body, param, long string }{
		{"not JSON", `name=n&subject=s`, "", "not valid JSON"},
		{"truncated", `{"name":"n","subject":"s"`, "", "truncated"},
		{"truncated in a string", `{"name":"n`, "", "truncated"},
		{"array", `[{"name":"n","subject":"s"}]`, "", "JSON object"},
		{"string", `"name"`, "", "JSON object"},
		{"null", `null`, "", "JSON object"},
		{"trailing data", `{"name":"n","subject":"s"} {}`, "", "nothing after it"},
		{"name a number", `{"name":1,"subject":"s"}`, "name", "name must be a string"},
		{"scopes a string", `{"name":"n","subject":"s","scopes":"a b"}`, "scopes", "array of strings"},
		{"scope a number", `{"name":"n","subject":"s","scopes":["a",2]}`, "scopes", "scopes must be an array of strings"},
		{"seconds a string", `{"name":"n","subject":"s","seconds_until_expiration":"60"}`, "seconds_until_expiration", "integer"},
		{"seconds fractional", `{"name":"n","subject":"s","seconds_until_expiration":1.5}`, "seconds_until_expiration", "integer"},
		{"seconds huge", `{"name":"n","subject":"s","seconds_until_expiration":1e30}`, "seconds_until_expiration", "integer"},
		{"unknown field", `{"name":"n","subject":"s","expires_at":5}`, "expires_at", `unknown field "expires_at"`},
		{"camelCase field", `{"name":"n","subject":"s","createdBy":"u"}`, "createdBy", "createdBy"},
		{"invalid UTF-8", "{\"name\":\"n\xff\xfe\",\"subject\":\"s\"}", "", "UTF-8"},
		// A body that parsers read differently: duplicate keys (encoding/json
		// keeps the last, others the first) and keys that differ only in case
		// (encoding/json matches field names case-insensitively).
		{"a duplicate key", `{"name":"n","subject":"s","scopes":["a"],"scopes":["admin"]}`, "scopes", `the field "scopes" appears twice`},
		{"keys that differ in case", `{"name":"n","subject":"s","scopes":["a"],"SCOPES":["admin"]}`, "scopes", `the field "scopes" appears twice`},
		{"the case variant first", `{"Scopes":["admin"],"name":"n","subject":"s","scopes":["a"]}`, "Scopes", `unknown field "Scopes"`},
		{"a key in another case alone", `{"name":"n","SUBJECT":"s"}`, "SUBJECT", `unknown field "SUBJECT"`},
		{"a duplicate key, escaped", `{"name":"n","subject":"s","\u0073ubject":"t"}`, "subject", `the field "subject" appears twice`},
		{"a duplicate key in claims", `{"name":"n","subject":"s","claims":{"role":"user","role":"admin"}}`, "claims", `claims holds an object with the key "role" twice`},
		{"a duplicate key deep in claims", `{"name":"n","subject":"s","claims":{"a":[{"b":1,"b":2}]}}`, "claims", `key "b" twice`},
	} {
		cases = append(cases, errorCase{name: "create " + b.name, method: "POST", path: "/api_keys", body: b.body,
			status: 400, code: "request_body_invalid", param: b.param, long: b.long})
	}
	for _, b := range []struct{ name, body, param string }{
		{"truncated", `{"description":"x"`, ""},
		{"array", `[]`, ""},
		{"unknown field", `{"owner":"x"}`, "owner"},
		{"enabled a string", `{"enabled":"no"}`, "enabled"},
		{"allowed_cidrs a string", `{"allowed_cidrs":"10.0.0.0/8"}`, "allowed_cidrs"},
		{"description a number", `{"description":5}`, "description"},
		{"scopes an object", `{"scopes":{"a":1}}`, "scopes"},
		{"seconds a string", `{"seconds_until_expiration":"never"}`, "seconds_until_expiration"},
		{"seconds huge", `{"seconds_until_expiration":1e300}`, "seconds_until_expiration"},
		{"subject a number", `{"subject":42}`, "subject"},
		{"invalid UTF-8", "{\"description\":\"\xc3\x28\"}", ""},
		{"a duplicate key", `{"scopes":["a"],"scopes":["admin"]}`, "scopes"},
		{"keys that differ in case", `{"description":"a","Description":"b"}`, "description"},
	} {
		cases = append(cases, errorCase{name: "update " + b.name, method: "PATCH", path: "/api_keys/{id}", body: b.body,
			status: 400, code: "request_body_invalid", param: b.param})
	}
	cases = append(cases,
		errorCase{name: "revoke reason a number", method: "POST", path: "/api_keys/{id}/revoke", body: `{"revocation_reason":1}`,
			status: 400, code: "request_body_invalid", param: "revocation_reason"},
		errorCase{name: "revoke unknown field", method: "POST", path: "/api_keys/{id}/revoke", body: `{"reason":"x"}`,
			status: 400, code: "request_body_invalid", param: "reason"},
		errorCase{name: "revoke truncated", method: "POST", path: "/api_keys/{id}/revoke", body: `{"revocation_reason":`,
			status: 400, code: "request_body_invalid"},
		errorCase{name: "verify secret a number", method: "POST", path: "/api_keys/verify", body: `{"secret":1}`,
			status: 400, code: "request_body_invalid", param: "secret"},
		errorCase{name: "verify array", method: "POST", path: "/api_keys/verify", body: `["{secret}"]`,
			status: 400, code: "request_body_invalid"},
		errorCase{name: "verify unknown field", method: "POST", path: "/api_keys/verify", body: `{"secret":"{secret}","token":"x"}`,
			status: 400, code: "request_body_invalid", param: "token"},
		errorCase{name: "verify a duplicate key", method: "POST", path: "/api_keys/verify", body: `{"secret":"x","secret":"{secret}"}`,
			status: 400, code: "request_body_invalid", param: "secret"},
		errorCase{name: "revoke keys that differ in case", method: "POST", path: "/api_keys/{id}/revoke", body: `{"revocation_reason":"a","REVOCATION_REASON":"b"}`,
			status: 400, code: "request_body_invalid", param: "revocation_reason"},
	)

	// 404 resource_not_found.
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api_keys/" + unknownID, ""},
		{"PATCH", "/api_keys/" + unknownID, `{"description":"x"}`},
		{"POST", "/api_keys/" + unknownID + "/revoke", ``},
		{"DELETE", "/api_keys/" + unknownID, ""},
		{"GET", "/api_keys/not-an-id", ""},
		{"DELETE", "/api_keys/AK_" + strings.Repeat("F", 32), ""},
		{"GET", "/api_keys/", ""},
		{"GET", "/api_keys//revoke", ""},
		{"GET", "/api_keysx", ""},
		{"GET", "/v2/api_keys", ""},
		{"GET", "/", ""},
		{"POST", "/api_keys/{id}/revoke/again", ""},
		{"GET", "/api_keys/{id}/", ""},
		{"GET", "/api_keys/{id}/rotate", ""},
	} {
		cases = append(cases, errorCase{name: "not found " + r.method + " " + r.path, method: r.method, path: r.path, body: r.body,
			status: 404, code: "resource_not_found"})
	}

	// 404 on verify.
	cases = append(cases,
		errorCase{name: "verify garbage", method: "POST", path: "/api_keys/verify", body: `{"secret":"hunter2"}`,
			status: 404, code: "api_key_invalid"},
		errorCase{name: "verify a key with a typo", method: "POST", path: "/api_keys/verify",
			prep: func(t *testing.T, e *env, k *keystore.APIKey) {
				b := []byte(k.Secret)
				b[10] ^= 1 // a hex digit of the ID: the checksum no longer matches
				k.Secret = string(b)
			},
			body: `{"secret":"{secret}"}`, status: 404, code: "api_key_invalid"},
		errorCase{name: "verify a deleted key", method: "POST", path: "/api_keys/verify",
			prep: func(t *testing.T, e *env, k *keystore.APIKey) {
				mustStatus(t, e.do("DELETE", "/api_keys/"+k.ID, ""), 200)
			},
			body: `{"secret":"{secret}"}`, status: 404, code: "api_key_not_found"},
		errorCase{name: "verify a revoked key", method: "POST", path: "/api_keys/verify",
			prep: func(t *testing.T, e *env, k *keystore.APIKey) {
				mustStatus(t, e.do("POST", "/api_keys/"+k.ID+"/revoke", ""), 200)
			},
			body: `{"secret":"{secret}"}`, status: 404, code: "api_key_revoked"},
		errorCase{name: "verify an expired key", method: "POST", path: "/api_keys/verify",
			prep: func(t *testing.T, e *env, k *keystore.APIKey) { e.clock.Advance(time.Hour) }, // fullKey lives 3600 s
			body: `{"secret":"{secret}"}`, status: 404, code: "api_key_expired"},
		errorCase{name: "secret of a key", method: "GET", path: "/api_keys/{id}/secret",
			status: 404, code: "api_key_secret_unavailable"},
		errorCase{name: "secret of no key", method: "GET", path: "/api_keys/" + unknownID + "/secret",
			status: 404, code: "api_key_secret_unavailable"},
	)

	// 405 with Allow.
	for _, r := range []struct{ method, path, allow string }{
		{"PUT", "/api_keys", "GET, POST"},
		{"DELETE", "/api_keys", "GET, POST"},
		{"HEAD", "/api_keys", "GET, POST"},
		{"GET", "/api_keys/verify", "POST"},
		{"POST", "/api_keys/{id}", "GET, PATCH, DELETE"},
		{"PUT", "/api_keys/{id}", "GET, PATCH, DELETE"},
		{"GET", "/api_keys/{id}/revoke", "POST"},
		{"DELETE", "/api_keys/{id}/secret", "GET"},
		{"BREW", "/api_keys/{id}", "GET, PATCH, DELETE"},
	} {
		cases = append(cases, errorCase{name: "method " + r.method + " " + r.path, method: r.method, path: r.path,
			status: 405, code: "method_not_allowed", allow: r.allow})
	}

	// 413 over 64 KiB.
	big := `{"name":"n","subject":"s","description":"` + strings.Repeat("d", 64<<10) + `"}`
	huge := `{"name":"` + strings.Repeat("n", 10<<20) + `"}`
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/api_keys", big},
		{"POST", "/api_keys", huge},
		{"PATCH", "/api_keys/{id}", huge},
		{"POST", "/api_keys/{id}/revoke", huge},
		{"POST", "/api_keys/verify", huge},
		{"POST", "/api_keys", strings.Repeat(" ", 64<<10+1)},
	} {
		cases = append(cases, errorCase{name: fmt.Sprintf("%d bytes %s %s", len(r.body), r.method, r.path), method: r.method, path: r.path, body: r.body,
			status: 413, code: "request_body_too_large"})
	}
	return cases
}

// TestErrors runs every status and code of docs/api.md, under both
// prefixes, and checks that none of the failed requests changed a thing.
func TestErrors(t *testing.T) {
	for _, prefix := range []string{"", "/v1"} {
		for _, tc := range errorCases() {
			t.Run(strings.TrimSpace(strings.TrimPrefix(prefix, "/")+" "+tc.name), func(t *testing.T) {
				e := newEnv(t)
				bystander := e.create(t, `{"name":"bystander","subject":"user_9","scopes":["a"]}`)
				k := e.create(t, fullKey)
				if tc.prep != nil {
					tc.prep(t, e, k)
				}
				before := e.snapshot()
				if !strings.Contains(before, "keygate:key:"+bystander.ID) {
					t.Fatalf("the snapshot misses a key:\n%s", before)
				}
				path := strings.ReplaceAll(tc.path, "{id}", k.ID)
				if path != "/" && !strings.HasPrefix(path, "/v2") {
					path = prefix + path
				}
				body := strings.ReplaceAll(tc.body, "{secret}", k.Secret)
				rec := e.do(tc.method, path, body, append([]string{"X-Request-Id", traceID}, tc.headers...)...)
				if rec.Code != tc.status {
					t.Fatalf("%s %s: status %d, want %d: %s", tc.method, path, rec.Code, tc.status, rec.Body)
				}
				got := decodeError(t, rec)
				if got.Code != tc.code || got.Param != tc.param || !strings.Contains(got.Long, tc.long) {
					t.Fatalf("got code %q param %q long %q; want code %q param %q long containing %q",
						got.Code, got.Param, got.Long, tc.code, tc.param, tc.long)
				}
				if got.TraceID != traceID || got.RequestHdr != traceID {
					t.Errorf("clerk_trace_id %q, X-Request-Id %q; want the request's %q", got.TraceID, got.RequestHdr, traceID)
				}
				if got.Allow != tc.allow {
					t.Errorf("Allow %q, want %q", got.Allow, tc.allow)
				}
				if (tc.status == 401) != (got.WWWAuthenticate != "") {
					t.Errorf("status %d with WWW-Authenticate %q", tc.status, got.WWWAuthenticate)
				}
				if got.RetryAfter != "" {
					t.Errorf("Retry-After %q on a %d", got.RetryAfter, tc.status)
				}
				if k.Secret != "" && strings.Contains(rec.Body.String(), k.Secret) || strings.Contains(rec.Body.String(), adminToken) {
					t.Errorf("error body carries a secret or the admin token: %s", rec.Body)
				}
				if after := e.snapshot(); after != before {
					t.Errorf("a refused request changed the store:\nbefore %s\nafter  %s", before, after)
				}
			})
		}
	}
}

// TestStoreUnavailable checks that every route that needs Redis answers 503
// store_unavailable with Retry-After when Redis fails, and never 500.
func TestStoreUnavailable(t *testing.T) {
	tests := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/api_keys", fullKey, 503, "store_unavailable"},
		{"GET", "/api_keys", "", 503, "store_unavailable"},
		{"GET", "/api_keys?include_invalid=true", "", 503, "store_unavailable"},
		{"GET", "/api_keys/{id}", "", 503, "store_unavailable"},
		{"PATCH", "/api_keys/{id}", `{"description":"x"}`, 503, "store_unavailable"},
		{"POST", "/api_keys/{id}/revoke", "", 503, "store_unavailable"},
		{"DELETE", "/api_keys/{id}", "", 503, "store_unavailable"},
		{"POST", "/api_keys/verify", `{"secret":"{secret}"}`, 503, "store_unavailable"},
		// Decided without Redis:
		{"POST", "/api_keys/verify", `{"secret":"nope"}`, 404, "api_key_invalid"},
		{"GET", "/api_keys/{id}/secret", "", 404, "api_key_secret_unavailable"},
		{"POST", "/api_keys", `{"name":"n"}`, 400, "form_param_missing"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path+" "+tc.body, func(t *testing.T) {
			e := newEnv(t)
			k := e.create(t, fullKey)
			e.mr.SetError("ERR injected failure")
			rec := e.do(tc.method, strings.ReplaceAll(tc.path, "{id}", k.ID), strings.ReplaceAll(tc.body, "{secret}", k.Secret))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			got := decodeError(t, rec)
			if got.Code != tc.code {
				t.Fatalf("code %s, want %s", got.Code, tc.code)
			}
			if (tc.status == 503) != (got.RetryAfter == "1") {
				t.Fatalf("status %d with Retry-After %q", tc.status, got.RetryAfter)
			}
			if strings.Contains(rec.Body.String(), "injected") {
				t.Fatalf("the cause leaked to the client: %s", rec.Body)
			}
		})
	}
}

// TestAuthAcceptsEveryToken checks the accepted forms of the admin token.
func TestAuthAcceptsEveryToken(t *testing.T) {
	e := newEnv(t)
	for _, h := range []string{"Bearer " + adminToken, "Bearer " + otherToken, "bearer " + adminToken, "BEARER  " + adminToken} {
		t.Run(h, func(t *testing.T) {
			if rec := e.do("GET", "/api_keys", "", "Authorization", h); rec.Code != 200 {
				t.Fatalf("%q: %d %s", h, rec.Code, rec.Body)
			}
		})
	}
}

// TestBodyAtTheLimit checks that a body of exactly 64 KiB is read.
func TestBodyAtTheLimit(t *testing.T) {
	e := newEnv(t)
	body := `{"name":"n","subject":"s"}`
	body += strings.Repeat(" ", 64<<10-len(body))
	rec := e.do("POST", "/api_keys", body)
	if rec.Code != 200 {
		t.Fatalf("a %d-byte body: %d %s", len(body), rec.Code, rec.Body)
	}
}

func mustStatus(t *testing.T, rec *httptest.ResponseRecorder, status int) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
}

// TestInvalidationUnconfirmed: a change whose invalidation cannot be
// published answers 503 invalidation_unconfirmed with Retry-After, is
// stored all the same, and succeeds when repeated once the publish works.
func TestInvalidationUnconfirmed(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	var failing atomic.Bool
	rdb.AddHook(failCommandsWith{arg: "keygate:invalidate", on: &failing})
	e := newEnvOn(t, mr, rdb)
	for _, tc := range []struct{ method, path, body string }{
		{"PATCH", "/api_keys/{id}", `{"description":"x"}`},
		{"POST", "/api_keys/{id}/revoke", `{"revocation_reason":"leaked"}`},
		{"DELETE", "/api_keys/{id}", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			k := e.create(t, fullKey)
			path := strings.ReplaceAll(tc.path, "{id}", k.ID)
			failing.Store(true)
			rec := e.do(tc.method, path, tc.body)
			failing.Store(false)
			if rec.Code != 503 {
				t.Fatalf("status %d, want 503: %s", rec.Code, rec.Body)
			}
			if got := decodeError(t, rec); got.Code != "invalidation_unconfirmed" || got.RetryAfter != "1" {
				t.Fatalf("code %s, Retry-After %q", got.Code, got.RetryAfter)
			}
			if rec := e.do(tc.method, path, tc.body); rec.Code != 200 {
				t.Fatalf("repeated: status %d, want 200: %s", rec.Code, rec.Body)
			}
		})
	}
}

// failCommandsWith is a go-redis hook that fails, while on is set, every
// command with the argument arg, as a cut connection would.
type failCommandsWith struct {
	arg string
	on  *atomic.Bool
}

func (h failCommandsWith) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h failCommandsWith) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() && slices.Contains(cmd.Args(), any(h.arg)) {
			err := errors.New("connection reset by peer")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (h failCommandsWith) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
