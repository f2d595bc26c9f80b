package adminapi_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
)

// code returns the error code of an error answer.
func code(t *testing.T, rec *httptest.ResponseRecorder) (string, string) {
	t.Helper()
	var b struct {
		Errors []struct {
			Code string
			Meta map[string]string
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || len(b.Errors) != 1 {
		t.Fatalf("not an error answer: %s", rec.Body)
	}
	return b.Errors[0].Code, b.Errors[0].Meta["param_name"]
}

func TestRollRoute(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, fullKey)
	rec := e.do("POST", "/v1/api_keys/"+k.ID+"/roll", "")
	if rec.Code != 200 {
		t.Fatalf("roll: %d %s", rec.Code, rec.Body)
	}
	n := decodeKey(t, rec)
	if !strings.HasPrefix(n.Secret, "ak_") || n.RolledFrom == nil || *n.RolledFrom != k.ID || n.Name != k.Name ||
		strings.Join(n.Scopes, " ") != strings.Join(k.Scopes, " ") {
		t.Fatalf("rolled key %s", rec.Body)
	}
	old := decodeKey(t, e.do("GET", "/api_keys/"+k.ID, ""))
	// The default grace is a day, capped by the key's own hour.
	if *old.RolledTo != n.ID || *old.Expiration != *k.Expiration {
		t.Errorf("old key after a default roll: %+v", old)
	}
	for _, tc := range []struct{ name, id, body, code, param string }{
		{"rolled already", k.ID, `{}`, "form_param_invalid", "id"},
		{"negative grace", n.ID, `{"expires_in_seconds":-1}`, "form_param_invalid", "expires_in_seconds"},
		{"grace a string", n.ID, `{"expires_in_seconds":"1d"}`, "request_body_invalid", "expires_in_seconds"},
		{"unknown key", "ak_00000000000000000000000000000000", `{}`, "resource_not_found", ""},
	} {
		rec := e.do("POST", "/v1/api_keys/"+tc.id+"/roll", tc.body)
		if c, p := code(t, rec); c != tc.code || p != tc.param {
			t.Errorf("%s: %d %s %s, want %s %s", tc.name, rec.Code, c, p, tc.code, tc.param)
		}
	}
	rec = e.do("POST", "/v1/api_keys/"+n.ID+"/roll", `{"expires_in_seconds":0}`)
	if rec.Code != 200 {
		t.Fatalf("roll with grace 0: %d %s", rec.Code, rec.Body)
	}
	if got := decodeKey(t, e.do("GET", "/api_keys/"+n.ID, "")); !got.Revoked {
		t.Errorf("a key rolled with grace 0 is not revoked: %+v", got)
	}
	rec = e.do("POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, n.Secret))
	if c, _ := code(t, rec); rec.Code != 404 || c != "api_key_revoked" {
		t.Errorf("verify of the key rolled with grace 0: %d %s", rec.Code, c)
	}
}

func TestEnabledAndName(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, fullKey)
	rec := e.do("PATCH", "/v1/api_keys/"+k.ID, `{"enabled":false,"name":"renamed"}`)
	if got := decodeKey(t, rec); got.Enabled || got.Name != "renamed" {
		t.Fatalf("PATCH: %s", rec.Body)
	}
	rec = e.do("POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret))
	if c, _ := code(t, rec); rec.Code != 404 || c != "api_key_disabled" {
		t.Errorf("verify of a disabled key: %d %s", rec.Code, c)
	}
	if got := decodeKey(t, e.do("PATCH", "/v1/api_keys/"+k.ID, `{"enabled":true}`)); !got.Enabled {
		t.Fatal("not enabled again")
	}
	if rec := e.do("POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret)); rec.Code != 200 {
		t.Errorf("verify after enable: %d %s", rec.Code, rec.Body)
	}
	if c, p := code(t, e.do("PATCH", "/v1/api_keys/"+k.ID, `{"name":""}`)); c != "form_param_missing" || p != "name" {
		t.Errorf("an empty name: %s %s", c, p)
	}
}

func TestRevokeAllRoute(t *testing.T) {
	e := newEnv(t)
	a, b := e.create(t, fullKey), e.create(t, fullKey)
	other := e.create(t, `{"name":"n","subject":"user_7"}`)
	rec := e.do("POST", "/v1/api_keys/revoke_all", `{"subject":"user_42","revocation_reason":"offboarded"}`)
	if strings.TrimSpace(rec.Body.String()) != `{"object":"bulk_revoke","subject":"user_42","revoked":2}` {
		t.Fatalf("revoke_all: %d %s", rec.Code, rec.Body)
	}
	for _, k := range []*keystore.APIKey{a, b} {
		if got := decodeKey(t, e.do("GET", "/api_keys/"+k.ID, "")); !got.Revoked || *got.RevocationReason != "offboarded" {
			t.Errorf("%s after revoke_all: %+v", k.ID, got)
		}
	}
	if got := decodeKey(t, e.do("GET", "/api_keys/"+other.ID, "")); got.Revoked {
		t.Error("revoke_all revoked another subject's key")
	}
	for _, body := range []string{`{}`, `{"subject":null}`, `{"subject":""}`} {
		if c, p := code(t, e.do("POST", "/api_keys/revoke_all", body)); c != "form_param_missing" || p != "subject" {
			t.Errorf("revoke_all %s: %s %s", body, c, p)
		}
	}
	if rec := e.do("GET", "/api_keys/revoke_all", ""); rec.Code != 405 {
		t.Errorf("GET revoke_all: %d", rec.Code)
	}
}

func TestImportRoute(t *testing.T) {
	e := newEnv(t)
	const foreign = "unkey_3ZbMhFgG7mWmzHqQwXYvz"
	body := fmt.Sprintf(`{"name":"moved","subject":"org_3","scopes":["read"],"hash":{"algorithm":"sha256","value":"%x"}}`, sha256.Sum256([]byte(foreign)))
	rec := e.do("POST", "/v1/api_keys/import", body)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), `"secret"`) {
		t.Fatalf("import: %d %s", rec.Code, rec.Body)
	}
	k := decodeKey(t, rec)
	rec = e.do("POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, foreign))
	if got := decodeKey(t, rec); got.ID != k.ID {
		t.Fatalf("verify of the imported secret: %s", rec.Body)
	}
	for _, tc := range []struct{ body, code, param string }{
		{body, "form_param_invalid", "hash"}, // imported already
		{`{"name":"n","subject":"s","hash":{"algorithm":"md5","value":"00"}}`, "form_param_invalid", "hash"},
		{`{"name":"n","subject":"s"}`, "form_param_invalid", "hash"},
		{`{"name":"n","subject":"s","secret":"x","hash":{"algorithm":"sha256","value":"00"}}`, "request_body_invalid", "secret"},
		{`{"NAME":"n","subject":"s","hash":{"algorithm":"sha256","value":"00"}}`, "request_body_invalid", "NAME"},
	} {
		if c, p := code(t, e.do("POST", "/api_keys/import", tc.body)); c != tc.code || p != tc.param {
			t.Errorf("import %s: %s %s, want %s %s", tc.body, c, p, tc.code, tc.param)
		}
	}
}

// TestVerifyClientAddress: POST /api_keys/verify checks a key's allowed
// CIDRs against client_ip, else against the caller, as the trusted
// proxies report it.
func TestVerifyClientAddress(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnvOn(t, mr, rdb, func(_ *env, o *adminapi.Options) {
		o.Throttle.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	k := e.create(t, `{"name":"office","subject":"s","allowed_cidrs":["203.0.113.0/24"]}`)
	verify := func(extra string, remote string, headers ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/api_keys/verify", strings.NewReader(fmt.Sprintf(`{"secret":%q%s}`, k.Secret, extra)))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.RemoteAddr = remote
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		return rec
	}
	for _, tc := range []struct {
		name, extra, remote string
		headers             []string
		status              int
		code                string
	}{
		{"client_ip inside", `,"client_ip":"203.0.113.9"`, "192.0.2.1:1", nil, 200, ""},
		{"client_ip outside", `,"client_ip":"198.51.100.1"`, "203.0.113.9:1", nil, 403, "api_key_ip_not_allowed"},
		{"the caller inside", "", "203.0.113.9:1", nil, 200, ""},
		{"the caller outside", "", "192.0.2.1:1", nil, 403, "api_key_ip_not_allowed"},
		{"a trusted proxy's client", "", "10.1.1.1:1", []string{"X-Forwarded-For", "203.0.113.9"}, 200, ""},
		{"an untrusted caller's header", "", "192.0.2.1:1", []string{"X-Forwarded-For", "203.0.113.9"}, 403, "api_key_ip_not_allowed"},
		{"spoofed left of the client", "", "10.1.1.1:1", []string{"X-Forwarded-For", "203.0.113.9, 198.51.100.1"}, 403, "api_key_ip_not_allowed"},
		{"bad client_ip", `,"client_ip":"203.0.113.0/24"`, "203.0.113.9:1", nil, 400, "form_param_invalid"},
	} {
		rec := verify(tc.extra, tc.remote, tc.headers...)
		if rec.Code != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, rec.Code, rec.Body, tc.status)
			continue
		}
		if tc.code != "" {
			if c, _ := code(t, rec); c != tc.code {
				t.Errorf("%s: code %s, want %s", tc.name, c, tc.code)
			}
		}
	}
}
