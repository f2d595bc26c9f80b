package middleware_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/echomw"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// The challenges of docs/verification.md.
const (
	missingChallenge = `Bearer realm="keygate"`
	invalidChallenge = `Bearer realm="keygate", error="invalid_token"`
)

func scopeChallenge(scope string) string {
	return `Bearer realm="keygate", error="insufficient_scope", scope="` + scope + `"`
}

// env is a verifier over a store that holds one key in each state, by name:
//
//	reader     valid, subject user_reader, scopes reports:read
//	admin      valid, subject user_admin, scopes reports:read reports:write
//	revoked    revoked
//	expired    expired by moving the clock past its expiration
//	unknown    well-formed, but deleted from the store
//	fresh      valid, never verified before the test uses it
//	malformed  not a key at all (bad checksum)
type env struct {
	store   *keystore.Store
	v       *keystore.Verifier
	reg     *prometheus.Registry
	clock   *testclock.Clock
	secrets map[string]string
	down    func() // makes the store unreachable
}

// backend is a Redis to run tests on.
type backend struct {
	name  string
	start func(t testing.TB) (rdb *redis.Client, down func())
}

var (
	mini = backend{"miniredis", func(t testing.TB) (*redis.Client, func()) {
		mr, rdb := redistest.Mini(t)
		return rdb, mr.Close
	}}
	realRedis = backend{"redis-server", func(t testing.TB) (*redis.Client, func()) {
		p := redistest.Start(t)
		rdb := redis.NewClient(redistest.ClientOptions(p.Addr))
		t.Cleanup(func() { rdb.Close() })
		return rdb, p.Stop
	}}
	backends = []backend{mini, realRedis}
)

func newEnv(t testing.TB, b backend) *env {
	t.Helper()
	rdb, down := b.start(t)
	c := testclock.New()
	reg := prometheus.NewRegistry()
	store, v := keystoretest.New(t, rdb, keystore.Options{Now: c.Now, LastUsedFlush: -1},
		keystore.VerifierOptions{Registerer: reg, Logger: slog.New(slog.DiscardHandler)})
	e := &env{store: store, v: v, reg: reg, clock: c, secrets: map[string]string{}, down: down}

	ctx := context.Background()
	create := func(name, subject string, scopes []string, ttl *int64) *keystore.APIKey {
		t.Helper()
		k, err := store.Create(ctx, keystore.CreateParams{
			Name: name, Subject: subject, Scopes: scopes, SecondsUntilExpiration: ttl,
		})
		if err != nil {
			t.Fatal(err)
		}
		e.secrets[name] = k.Secret
		return k
	}
	create("reader", "user_reader", []string{"reports:read"}, nil)
	create("admin", "user_admin", []string{"reports:read", "reports:write"}, nil)
	create("fresh", "user_fresh", nil, nil)
	if _, err := store.Revoke(ctx, create("revoked", "user_revoked", nil, nil).ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, create("unknown", "user_unknown", nil, nil).ID); err != nil {
		t.Fatal(err)
	}
	minute := int64(60)
	create("expired", "user_expired", nil, &minute)
	c.Advance(61 * time.Second)
	// A valid key with its last checksum character changed.
	r := e.secrets["reader"]
	last := byte('A')
	if r[len(r)-1] == 'A' {
		last = 'B'
	}
	e.secrets["malformed"] = r[:len(r)-1] + string(last)
	return e
}

// expand replaces {name} with the secret of the key called name.
func (e *env) expand(s string) string {
	for name, secret := range e.secrets {
		s = strings.ReplaceAll(s, "{"+name+"}", secret)
	}
	return s
}

// middlewareVerifications sums keygate_verifications_total{source="middleware"}
// by result.
func (e *env) middlewareVerifications(t *testing.T) map[string]float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "keygate_verifications_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["source"] == string(keystore.SourceMiddleware) {
				out[labels["result"]] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// config is what both middlewares are configured with in the shared tables.
type config struct {
	lookup   string
	scopes   []string
	optional bool
	route    []string // scopes required by RequireScopes on the route; nil for none
	proxies  []netip.Prefix
}

// stack builds a handler that answers the request's subject (or
// "anonymous") behind one of the two middlewares.
type stack struct {
	name  string
	build func(v *keystore.Verifier, c config) http.Handler
}

var stacks = []stack{{"net/http", buildHTTP}, {"echo", buildEcho}}

func buildHTTP(v *keystore.Verifier, c config) http.Handler {
	h := http.Handler(http.HandlerFunc(whoami))
	if c.route != nil {
		h = middleware.RequireScopes(c.route...)(h)
	}
	return middleware.New(v, middleware.Options{KeyLookup: middleware.MustParseKeyLookup(c.lookup), Scopes: c.scopes, Optional: c.optional, TrustedProxies: c.proxies})(h)
}

func whoami(w http.ResponseWriter, r *http.Request) {
	key, ok := middleware.FromContext(r.Context())
	if !ok {
		io.WriteString(w, "anonymous")
		return
	}
	io.WriteString(w, key.Subject)
}

func buildEcho(v *keystore.Verifier, c config) http.Handler {
	e := echo.New()
	e.Use(echomw.New(v, echomw.Config{KeyLookup: c.lookup, Scopes: c.scopes, Optional: c.optional, TrustedProxies: c.proxies}))
	var route []echo.MiddlewareFunc
	if c.route != nil {
		route = append(route, echomw.RequireScopes(c.route...))
	}
	e.Any("/*", echoWhoami, route...)
	return e
}

// echoWhoami answers like whoami, and 500 if echomw.Key and middleware.FromContext
// disagree.
func echoWhoami(c echo.Context) error {
	key, ok := echomw.Key(c)
	ctxKey, ctxOK := middleware.FromContext(c.Request().Context())
	if key != ctxKey || ok != ctxOK {
		return c.String(http.StatusInternalServerError, "echomw.Key and middleware.FromContext disagree")
	}
	if !ok {
		return c.String(http.StatusOK, "anonymous")
	}
	return c.String(http.StatusOK, key.Subject)
}

// request is a request to send in a table, with {name} standing for the
// secret of the env's key called name.
type request struct {
	method      string // default GET
	target      string // default /reports
	header      []string
	body        string
	contentType string
	remote      string // RemoteAddr; default httptest's 192.0.2.1:1234
}

func (rq request) build(e *env) *http.Request {
	method, target := rq.method, rq.target
	if method == "" {
		method = http.MethodGet
	}
	if target == "" {
		target = "/reports"
	}
	var body io.Reader
	if rq.body != "" {
		body = strings.NewReader(e.expand(rq.body))
	}
	r := httptest.NewRequest(method, e.expand(target), body)
	for i := 0; i+1 < len(rq.header); i += 2 {
		r.Header.Add(rq.header[i], e.expand(rq.header[i+1]))
	}
	if rq.contentType != "" {
		r.Header.Set("Content-Type", rq.contentType)
	}
	if rq.remote != "" {
		r.RemoteAddr = rq.remote
	}
	return r
}

// response is what a table expects back.
type response struct {
	status    int
	challenge string // WWW-Authenticate, exactly; "" for none
	code      string // docs/api.md's error code, checked on the net/http body
	subject   string // the body on success: the key's subject or "anonymous"
}

func (want response) check(t *testing.T, stackName string, rec *httptest.ResponseRecorder) {
	t.Helper()
	body := rec.Body.String()
	if rec.Code != want.status {
		t.Fatalf("status %d, want %d; body %q", rec.Code, want.status, body)
	}
	if got := rec.Header().Get("WWW-Authenticate"); got != want.challenge {
		t.Errorf("WWW-Authenticate %q, want %q", got, want.challenge)
	}
	if got, want503 := rec.Header().Get("Retry-After"), want.status == http.StatusServiceUnavailable; (got != "") != want503 {
		t.Errorf("Retry-After %q on a %d", got, rec.Code)
	}
	if want.status < 300 {
		if body != want.subject {
			t.Errorf("handler saw %q, want %q", body, want.subject)
		}
		return
	}
	if strings.Contains(body, "user_") || body == "anonymous" {
		t.Errorf("a refused request reached the handler: %q", body)
	}
	if stackName == "net/http" && want.code != "" {
		var b struct {
			Errors []struct{ Code string } `json:"errors"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || len(b.Errors) != 1 {
			t.Fatalf("body %q is not docs/api.md's error JSON: %v", body, err)
		}
		if b.Errors[0].Code != want.code {
			t.Errorf("error code %q, want %q", b.Errors[0].Code, want.code)
		}
	}
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}
