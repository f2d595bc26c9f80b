package adminapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/syncbuf"

	"github.com/alicebob/miniredis/v2"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

const (
	adminToken  = "kg-admin-7c1d93e0a4b2f6a8e1c05d3b97f4"
	otherToken  = "kg-admin-second-0b9e6c2a71f83d5e9b04"
	testSubject = "user_42"
)

// env is the admin API on a store, with everything a test inspects.
type env struct {
	h        http.Handler
	store    *keystore.Store
	rdb      *redis.Client
	mr       *miniredis.Miniredis // nil on a real redis-server
	clock    *testclock.Clock
	logs     *syncbuf.Buffer
	registry *prometheus.Registry
}

// newEnv returns the admin API on miniredis.
func newEnv(t *testing.T) *env {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	return newEnvOn(t, mr, rdb)
}

func newEnvOn(t *testing.T, mr *miniredis.Miniredis, rdb *redis.Client, opts ...func(*env, *adminapi.Options)) *env {
	t.Helper()
	e := &env{rdb: rdb, mr: mr, clock: testclock.New(),
		logs: &syncbuf.Buffer{}, registry: prometheus.NewRegistry()}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, verifier := keystoretest.New(t, rdb, keystore.Options{Now: e.clock.Now, LastUsedFlush: -1, Logger: logger}, keystore.VerifierOptions{Registerer: e.registry, Logger: logger})
	o := adminapi.Options{
		Store:       store,
		Verifier:    verifier,
		AdminTokens: []string{adminToken, "", otherToken},
		Logger:      logger,
		Registerer:  e.registry,
	}
	for _, f := range opts {
		f(e, &o)
	}
	h, err := adminapi.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.h, e.store = validated(t, h), store
	return e
}

// do sends a request as Clerk's SDK does: the admin token as a bearer
// token and Content-Type: application/json whatever the method. headers
// are name, value pairs that replace those; a value of "" removes one.
func (e *env) do(method, path, body string, headers ...string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// create creates a key through the API and returns it with its secret.
func (e *env) create(t *testing.T, body string) *keystore.APIKey {
	t.Helper()
	rec := e.do("POST", "/api_keys", body)
	if rec.Code != 200 {
		t.Fatalf("create %s: %d %s", body, rec.Code, rec.Body)
	}
	k := decodeKey(t, rec)
	if k.Secret == "" {
		t.Fatalf("create returned no secret: %s", rec.Body)
	}
	return k
}

// snapshot is every key record and index miniredis holds, to show that a
// request changed nothing. The verifiers' own bookkeeping, which changes in
// the background, is left out.
func (e *env) snapshot() string {
	var b strings.Builder
	keep := false
	for _, line := range strings.SplitAfter(e.mr.Dump(), "\n") {
		if name, ok := strings.CutPrefix(line, "- "); ok {
			name = strings.TrimSpace(name)
			keep = strings.HasPrefix(name, "keygate:key:") || strings.HasPrefix(name, "keygate:sub:") ||
				strings.HasPrefix(name, "keygate:{all}:") && !strings.HasSuffix(name, ":layout")
		}
		if keep {
			b.WriteString(line)
		}
	}
	return b.String()
}

func decodeKey(t *testing.T, rec *httptest.ResponseRecorder) *keystore.APIKey {
	t.Helper()
	checkJSON(t, rec)
	var k keystore.APIKey
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&k); err != nil {
		t.Fatalf("decoding a key: %v", err)
	}
	if string(k.Claims) == "null" {
		k.Claims = nil // as the store returns it
	}
	if k.Object != "api_key" || k.Type != "api_key" || !strings.HasPrefix(k.ID, "ak_") || k.Scopes == nil {
		t.Fatalf("not a key in docs/api.md's form: %+v", k)
	}
	return &k
}

func decodeList(t *testing.T, rec *httptest.ResponseRecorder) *keystore.KeyList {
	t.Helper()
	checkJSON(t, rec)
	if rec.Code != 200 {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	var l keystore.KeyList
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		t.Fatalf("decoding a list: %v", err)
	}
	if l.Data == nil {
		t.Fatal("list without a data array")
	}
	return &l
}

// apiErr is the one error of a response.
type apiErr struct {
	Status                      int
	Code, Message, Long, Param  string
	TraceID, Allow, RetryAfter  string
	WWWAuthenticate, RequestHdr string
}

// decodeError checks that rec is an error in docs/api.md's form and
// returns it.
func decodeError(t *testing.T, rec *httptest.ResponseRecorder) apiErr {
	t.Helper()
	checkJSON(t, rec)
	var b apierror.Body
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("status %d: not docs/api.md's error JSON (%v): %s", rec.Code, err, rec.Body)
	}
	if len(b.Errors) != 1 {
		t.Fatalf("want one error, got %s", rec.Body)
	}
	it := b.Errors[0]
	if it.Code == "" || it.Message == "" || it.LongMessage == "" || it.Meta == nil || b.ClerkTraceID == "" {
		t.Fatalf("error body with an empty field: %s", rec.Body)
	}
	return apiErr{
		Status: rec.Code, Code: it.Code, Message: it.Message, Long: it.LongMessage,
		Param: it.Meta["param_name"], TraceID: b.ClerkTraceID,
		Allow: rec.Header().Get("Allow"), RetryAfter: rec.Header().Get("Retry-After"),
		WWWAuthenticate: rec.Header().Get("WWW-Authenticate"), RequestHdr: rec.Header().Get("X-Request-Id"),
	}
}

func checkJSON(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want exactly application/json (status %d, body %s)", ct, rec.Code, rec.Body)
	}
}
