package adminapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
)

// fuzzEnv is the admin API on miniredis, built once per fuzz target and
// shared by its inputs, with one live key that inputs may name: "{id}"
// and "{secret}" in a path or body stand for its ID and secret.
type fuzzEnv struct {
	h      http.Handler
	mr     *miniredis.Miniredis
	store  *keystore.Store
	id     string
	secret string
}

func newFuzzEnv(tb testing.TB) *fuzzEnv {
	tb.Helper()
	mr, rdb := redistest.Mini(tb)
	quiet := slog.New(slog.DiscardHandler)
	// No cache, so no subscription: revoke and delete do not wait for
	// acknowledgements, and inputs stay fast.
	store, v := keystoretest.New(tb, rdb, keystore.Options{LastUsedFlush: -1, Logger: quiet}, keystore.VerifierOptions{CacheTTL: -1, Logger: quiet})
	h, err := adminapi.New(adminapi.Options{Store: store, Verifier: v, AdminTokens: []string{adminToken}, Logger: quiet})
	if err != nil {
		tb.Fatal(err)
	}
	e := &fuzzEnv{h: h, mr: mr, store: store}
	e.refresh(tb)
	return e
}

// refresh keeps the store small and the live key live.
func (e *fuzzEnv) refresh(tb testing.TB) {
	ctx := context.Background()
	if len(e.mr.Keys()) > 2000 {
		e.mr.FlushAll()
		e.id = ""
	}
	if e.id != "" {
		if k, err := e.store.Get(ctx, e.id); err == nil && !k.Revoked && !k.Expired {
			return
		}
	}
	k, err := e.store.Create(ctx, keystore.CreateParams{Name: "fuzz", Subject: "user_fuzz", Scopes: []string{"a:b"}})
	if err != nil {
		tb.Fatal(err)
	}
	e.id, e.secret = k.ID, k.Secret
}

func (e *fuzzEnv) expand(s string) string {
	return strings.NewReplacer("{id}", e.id, "{secret}", e.secret).Replace(s)
}

// serve sends one request and checks what every answer of the admin API
// must be, whatever the input: no panic, no 500 and no 503 (the store is
// up), Content-Type exactly application/json, and a body that is either a
// success or docs/api.md's error JSON. It returns the status and body.
func (e *fuzzEnv) serve(t *testing.T, method, path, rawQuery string, body []byte, auth string) (int, []byte) {
	req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	req.Method = method
	req.URL.Path = path
	req.URL.RawQuery = rawQuery
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	validated(t, e.h).ServeHTTP(rec, req)
	status, out := rec.Code, rec.Body.Bytes()
	what := method + " " + strconv.Quote(path) + " ?" + strconv.Quote(rawQuery) + " body " + strconv.Quote(string(body))
	switch status {
	case 200, 400, 401, 404, 405, 413:
	default:
		t.Fatalf("%s: status %d, body %s", what, status, out)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", what, ct)
	}
	if status == 200 {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(out, &obj); err != nil {
			t.Fatalf("%s: 200 with a body that is not a JSON object: %s", what, out)
		}
		return status, out
	}
	var eb apierror.Body
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || len(eb.Errors) != 1 || eb.ClerkTraceID == "" {
		t.Fatalf("%s: %d with a body that is not docs/api.md's error JSON (%v): %s", what, status, err, out)
	}
	it := eb.Errors[0]
	if it.Code == "" || it.Message == "" || it.LongMessage == "" || it.Meta == nil {
		t.Fatalf("%s: incomplete error %s", what, out)
	}
	want := map[int][]string{
		400: {"form_param_missing", "form_param_invalid", "request_body_invalid"},
		401: {"authentication_invalid"},
		404: {"resource_not_found", "api_key_not_found", "api_key_invalid", "api_key_revoked", "api_key_expired", "api_key_secret_unavailable"},
		405: {"method_not_allowed"},
		413: {"request_body_too_large"},
	}[status]
	if !slices.Contains(want, it.Code) {
		t.Fatalf("%s: %d with code %q, want one of %v", what, status, it.Code, want)
	}
	if status == 405 && rec.Header().Get("Allow") == "" {
		t.Fatalf("%s: 405 without Allow", what)
	}
	return status, out
}

var fuzzMethods = []string{"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"}

// FuzzAdminAPI drives the whole handler with any method, path, query, body
// and Authorization header.
func FuzzAdminAPI(f *testing.F) {
	e := newFuzzEnv(f)
	for _, s := range []struct {
		method      uint8
		path, query string
		body        string
		auth        uint8
	}{
		{1, "/api_keys", "", `{"name":"n","subject":"s","scopes":["a:b"],"claims":{"x":1},"seconds_until_expiration":60}`, 0},
		{1, "/v1/api_keys", "", `{"name":"n","subject":"s","description":null,"created_by":"u","type":"api_key"}`, 0},
		{1, "/api_keys", "", `{"name":"","subject":"s"}`, 0},
		{1, "/api_keys", "", `{"name":"n","subject":"s","scopes":["bad scope"]}`, 0},
		{1, "/api_keys", "", `{"name":"n","subject":"s","scopes":"a"}`, 0},
		{1, "/api_keys", "", `{"name":"n","subject":"s","claims":[1]}`, 0},
		{1, "/api_keys", "", `{"name":"n","subject":"s","seconds_until_expiration":1e400}`, 0},
		{1, "/api_keys", "", `{"name":"n","subject":"s","extra":1}`, 0},
		{1, "/api_keys", "", `{"name":"n","subject":"s"} {}`, 0},
		{1, "/api_keys", "", "{\"name\":\"\xff\",\"subject\":\"s\"}", 0},
		{1, "/api_keys", "", `[1,2]`, 0},
		{0, "/api_keys", "subject=user_fuzz&limit=5", "", 0},
		{0, "/api_keys/{id}", "", "", 0},
		{2, "/api_keys/{id}", "", `{"description":"d","scopes":null,"claims":null,"seconds_until_expiration":null}`, 0},
		{2, "/v1/api_keys/{id}", "", `{"subject":"other"}`, 0},
		{2, "/api_keys/{id}", "", `{"seconds_until_expiration":"soon"}`, 0},
		{1, "/api_keys/{id}/revoke", "", `{"revocation_reason":"leaked"}`, 0},
		{1, "/api_keys/{id}/revoke", "", ``, 0},
		{3, "/api_keys/{id}", "", "", 0},
		{0, "/api_keys/{id}/secret", "", "", 0},
		{1, "/api_keys/verify", "", `{"secret":"{secret}"}`, 0},
		{1, "/api_keys/verify", "", `{"secret":"ak_nope"}`, 0},
		{1, "/api_keys/verify", "", `{"secret":5}`, 0},
		{1, "/api_keys/verify", "", `{}`, 0},
		{0, "/api_keys/{secret}", "", "", 0},
		{4, "/api_keys", "", "", 0},
		{0, "/api_keys//x", "", "", 0},
		{0, "/nope", "", "", 0},
		{0, "/api_keys", "", "", 1},
		{0, "/api_keys", "", "", 2},
		{0, "/api_keys", "", "", 3},
		{1, "/api_keys", "", `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 0},
	} {
		f.Add(s.method, s.path, s.query, []byte(s.body), s.auth)
	}
	f.Fuzz(func(t *testing.T, method uint8, path, rawQuery string, body []byte, auth uint8) {
		e.refresh(t)
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		authHeader := []string{"Bearer " + adminToken, "", "Bearer wrong", "bEaReR   " + adminToken + " "}[auth%4]
		path = e.expand(path)
		body = []byte(e.expand(string(body)))
		status, out := e.serve(t, m, path, rawQuery, body, authHeader)
		if auth%4 == 1 || auth%4 == 2 {
			if status != 401 {
				t.Fatalf("%s %q with Authorization %q: %d, want 401 before anything else", m, path, authHeader, status)
			}
			return
		}
		if status == 200 && bytes.Contains(out, []byte(e.secret)) {
			t.Fatalf("%s %q answered with the live key's secret: %s", m, path, out)
		}
	})
}

// FuzzAdminAPIList drives GET /api_keys with any query string: a page
// within the limits, or 400 form_param_invalid naming the parameter.
func FuzzAdminAPIList(f *testing.F) {
	e := newFuzzEnv(f)
	ctx := context.Background()
	for i := range 12 {
		k, err := e.store.Create(ctx, keystore.CreateParams{Name: "key " + strconv.Itoa(i), Subject: "user_" + strconv.Itoa(i%2)})
		if err != nil {
			f.Fatal(err)
		}
		if i%3 == 0 {
			e.store.Revoke(ctx, k.ID, nil)
		}
	}
	for _, q := range []string{
		"", "subject=user_1", "subject=user_0&include_invalid=true", "include_invalid=TRUE", "limit=0", "limit=100",
		"limit=101", "limit=-1", "limit=3&offset=2", "offset=2147483648", "offset=1e3", "query=KEY%201", "query=%ff",
		"subject=%zz", "type=api_key", "type=other", "limit=5&limit=500", "query=" + strings.Repeat("a", 300),
		"include_invalid", ";;;&&=", "limit=%2B5",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		status, out := e.serve(t, "GET", "/api_keys", rawQuery, nil, "Bearer "+adminToken)
		q, _ := url.ParseQuery(rawQuery)
		if status == 400 {
			var eb apierror.Body
			json.Unmarshal(out, &eb)
			it := eb.Errors[0]
			params := []string{"include_invalid", "limit", "offset", "subject", "query", "type"}
			if it.Code != "form_param_invalid" || !slices.Contains(params, it.Meta["param_name"]) {
				t.Fatalf("?%s: 400 %s, want form_param_invalid naming a parameter", rawQuery, out)
			}
			return
		}
		if status != 200 {
			t.Fatalf("?%s: %d %s", rawQuery, status, out)
		}
		var list keystore.KeyList
		if err := json.Unmarshal(out, &list); err != nil || list.Data == nil {
			t.Fatalf("?%s: not a list: %s", rawQuery, out)
		}
		limit := keystore.DefaultLimit
		if v, ok := q["limit"]; ok {
			n, err := strconv.Atoi(v[0])
			if err != nil || n < 1 || n > keystore.MaxLimit {
				t.Fatalf("?%s: limit %q accepted", rawQuery, v[0])
			}
			limit = n
		}
		if len(list.Data) > limit || list.TotalCount < len(list.Data) {
			t.Fatalf("?%s: %d keys of %d with limit %d", rawQuery, len(list.Data), list.TotalCount, limit)
		}
		for _, k := range list.Data {
			if s := q.Get("subject"); s != "" && k.Subject != s {
				t.Fatalf("?%s: a key of %q", rawQuery, k.Subject)
			}
			if q.Get("include_invalid") != "true" && (k.Revoked || k.Expired) {
				t.Fatalf("?%s: an invalid key without include_invalid=true", rawQuery)
			}
			if k.Secret != "" {
				t.Fatalf("?%s: a listed key carries a secret", rawQuery)
			}
		}
	})
}
