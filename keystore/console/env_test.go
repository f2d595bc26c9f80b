package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/syncbuf"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/console"
	"github.com/keygate/keygate/sidecar"
	"github.com/redis/go-redis/v9"
)

// The admin tokens of the tests, one of each role.
var (
	adminTok  = adminapi.Token{Name: "ops", Role: adminapi.RoleAdmin, Token: "admin-token-0123456789abcdef0123456789"}
	readTok   = adminapi.Token{Name: "auditor", Role: adminapi.RoleRead, Token: "read-token-0123456789abcdef0123456789ab"}
	verifyTok = adminapi.Token{Name: "edge", Role: adminapi.RoleVerify, Token: "verify-token-0123456789abcdef0123456789"}
)

// env is a server as keygate serve mounts it: the admin API, the console
// and /forward-auth on one mux, over one store.
type env struct {
	rdb     redis.UniversalClient
	store   *keystore.Store
	srv     *httptest.Server
	logs    *syncbuf.Buffer
	console console.Options
}

type envOpt func(*console.Options)

func newEnv(t testing.TB, rdb redis.UniversalClient, opts ...envOpt) *env {
	t.Helper()
	return newEnvServer(t, rdb, false, opts...)
}

// newEnvServer is newEnv, serving HTTPS when tls is set.
func newEnvServer(t testing.TB, rdb redis.UniversalClient, tls bool, opts ...envOpt) *env {
	t.Helper()
	e := &env{rdb: rdb, logs: &syncbuf.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := keystore.New(rdb, keystore.Options{LastUsedFlush: -1, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { verifier.Close() })
	tokens := []adminapi.Token{adminTok, readTok, verifyTok}
	admin, err := adminapi.New(adminapi.Options{Store: store, Verifier: verifier, Tokens: tokens,
		Audit: audit.New(rdb, audit.Options{}), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	e.console = console.Options{AdminAPI: admin, Tokens: tokens, Redis: rdb, Logger: logger}
	for _, o := range opts {
		o(&e.console)
	}
	con, err := console.New(e.console)
	if err != nil {
		t.Fatal(err)
	}
	fa, err := sidecar.NewForwardAuth(verifier, sidecar.ForwardAuthOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range []string{"/api_keys", "/api_keys/", "/v1/api_keys", "/v1/api_keys/", "/v1/audit_events"} {
		mux.Handle(p, admin)
	}
	mux.Handle(console.Path, con)
	mux.Handle(console.Path+"/", con)
	mux.Handle(sidecar.ForwardAuthPath, fa)
	e.srv = httptest.NewUnstartedServer(console.WithHeaders(mux))
	if tls {
		e.srv.StartTLS()
	} else {
		e.srv.Start()
	}
	t.Cleanup(e.srv.Close)
	e.store = store
	return e
}

// browser is a cookie-keeping HTTP client that follows redirects, as a
// browser without JavaScript does.
type browser struct {
	t    testing.TB
	e    *env
	http *http.Client
	csrf string // the last page's CSRF token
}

func (e *env) browser(t testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, e: e, http: &http.Client{Transport: e.srv.Client().Transport, Jar: jar}}
}

// page is one answer as the browser shows it.
type page struct {
	status int
	path   string // after redirects
	body   string
	header http.Header
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]*)"`)

func (b *browser) do(req *http.Request) *page {
	b.t.Helper()
	resp, err := b.http.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	p := &page{status: resp.StatusCode, path: resp.Request.URL.Path, body: string(raw), header: resp.Header}
	if m := csrfField.FindStringSubmatch(p.body); m != nil {
		b.csrf = m[1]
	}
	return p
}

func (b *browser) get(path string) *page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	return b.do(req)
}

// post submits a form with the last page's CSRF token.
func (b *browser) post(path string, form url.Values) *page {
	b.t.Helper()
	f := url.Values{"csrf": {b.csrf}}
	for k, v := range form {
		f[k] = v
	}
	return b.postRaw(path, f)
}

// postRaw submits exactly form.
func (b *browser) postRaw(path string, form url.Values) *page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// signIn opens the sign-in page and signs in with token.
func (b *browser) signIn(token string) *page {
	b.t.Helper()
	b.get("/console/sign-in")
	return b.post("/console/sign-in", url.Values{"token": {token}})
}

// mustSignIn signs in and fails the test unless it lands on the keys.
func (b *browser) mustSignIn(tok adminapi.Token) {
	b.t.Helper()
	p := b.signIn(tok.Token)
	if p.status != 200 || p.path != "/console/keys" || !strings.Contains(p.body, "Signed in as <strong>"+tok.Name) {
		b.t.Fatalf("sign-in as %s: %d at %s\n%s", tok.Name, p.status, p.path, p.body)
	}
}

// createKey makes a key through the store, as another client of the
// admin API would.
func (e *env) createKey(t testing.TB, name, subject string) *keystore.APIKey {
	t.Helper()
	k, err := e.store.Create(context.Background(), keystore.CreateParams{Name: name, Subject: subject, Scopes: []string{"reports:read"}})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *env) key(t testing.TB, id string) *keystore.APIKey {
	t.Helper()
	k, err := e.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// forwardAuth asks /forward-auth about secret and returns the status.
func (e *env) forwardAuth(t testing.TB, secret string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+sidecar.ForwardAuthPath, nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// redisDump returns every key and string or hash value in Redis, to look
// for what must never be stored.
func (e *env) redisDump(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	keys, err := e.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "\n")
		switch e.rdb.Type(ctx, k).Val() {
		case "string":
			b.WriteString(e.rdb.Get(ctx, k).Val() + "\n")
		case "hash":
			for f, v := range e.rdb.HGetAll(ctx, k).Val() {
				b.WriteString(f + "=" + v + "\n")
			}
		case "zset":
			for _, m := range e.rdb.ZRange(ctx, k, 0, -1).Val() {
				b.WriteString(m + "\n")
			}
		case "set":
			for _, m := range e.rdb.SMembers(ctx, k).Val() {
				b.WriteString(m + "\n")
			}
		case "list":
			for _, m := range e.rdb.LRange(ctx, k, 0, -1).Val() {
				b.WriteString(m + "\n")
			}
		case "stream":
			for _, m := range e.rdb.XRange(ctx, k, "-", "+").Val() {
				for f, v := range m.Values {
					b.WriteString(f + "=" + strings.TrimSpace(toString(v)) + "\n")
				}
			}
		}
	}
	return b.String()
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// sessionKeys returns the Redis keys of the console's sessions.
func (e *env) sessionKeys(t testing.TB) []string {
	t.Helper()
	keys, err := e.rdb.Keys(context.Background(), "keygate:console:session:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// keyListAll lists every key of subject ("" for all), invalid ones too.
func keyListAll(subject string) keystore.ListParams {
	return keystore.ListParams{Subject: subject, IncludeInvalid: true, Limit: 100}
}
