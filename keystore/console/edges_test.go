package console_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/console"
)

// TestSignInAgainEndsTheOldSession: a second sign-in in the same browser
// leaves one session, not two.
func TestSignInAgainEndsTheOldSession(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	first := e.sessionKeys(t)
	// The sign-in page redirects a signed-in browser, so post the form the
	// way a second tab opened before the first sign-in would.
	u, _ := url.Parse(e.srv.URL + "/console/sign-in")
	var old string
	for _, c := range b.http.Jar.Cookies(u) {
		if c.Name == "keygate_console" {
			old = c.Value
		}
	}
	anon := e.browser(t)
	anon.get("/console/sign-in")
	anon.http.Jar.SetCookies(u, []*http.Cookie{{Name: "keygate_console", Value: old, Path: "/console"}})
	if p := anon.post("/console/sign-in", url.Values{"token": {readTok.Token}}); p.path != "/console/keys" ||
		!strings.Contains(p.body, "Signed in as <strong>auditor") {
		t.Fatalf("second sign-in: %d at %s", p.status, p.path)
	}
	keys := e.sessionKeys(t)
	if len(first) != 1 || len(keys) != 1 || keys[0] == first[0] {
		t.Fatalf("sessions before %v, after %v: want the old one replaced", first, keys)
	}
	if p := b.get("/console/keys"); p.path != "/console/sign-in" {
		t.Fatalf("the old cookie still works: at %s", p.path)
	}
}

// TestTwoSignInTabs: opening the sign-in page in a second tab does not
// break the first tab's form.
func TestTwoSignInTabs(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.get("/console/sign-in")
	firstTab := b.csrf
	b.get("/console/sign-in")
	if b.csrf != firstTab {
		t.Errorf("the second tab got another form token")
	}
	p := b.postRaw("/console/sign-in", url.Values{"token": {adminTok.Token}, "csrf": {firstTab}})
	if p.path != "/console/keys" {
		t.Fatalf("the first tab's sign-in: %d at %s", p.status, p.path)
	}
	// A cookie that is not one of ours is replaced by a fresh token.
	other := e.browser(t)
	u, _ := url.Parse(e.srv.URL + "/console/sign-in")
	other.http.Jar.SetCookies(u, []*http.Cookie{{Name: "keygate_console_signin", Value: "x", Path: "/console"}})
	other.get("/console/sign-in")
	if other.csrf == "x" || len(other.csrf) != 43 {
		t.Errorf("a malformed sign-in cookie was kept: form token %q", other.csrf)
	}
}

// TestHeadDoesNotTakeTheSecret: a HEAD of the secret's page leaves the
// secret for the GET.
func TestHeadDoesNotTakeTheSecret(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	b.get("/console/keys/new")
	b.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if p := b.post("/console/keys", url.Values{"name": {"headed"}, "subject": {"org_h"}}); p.status != http.StatusSeeOther {
		t.Fatalf("create: %d", p.status)
	}
	b.http.CheckRedirect = nil
	req, _ := http.NewRequest(http.MethodHead, e.srv.URL+"/console/secret", nil)
	if p := b.do(req); p.status != 200 {
		t.Fatalf("HEAD: %d", p.status)
	}
	p := b.get("/console/secret")
	if !regexp.MustCompile(`value="ak_[^"]+"`).MatchString(p.body) {
		t.Fatalf("after a HEAD the GET shows no secret:\n%s", p.body)
	}
	if !strings.Contains(p.body, `class="hint copy-hint"`) {
		t.Error("the secret's page has no hint to select and copy")
	}
}

// TestFormEncoding: a form that is not urlencoded is refused as such,
// not as a missing security token.
func TestFormEncoding(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.createKey(t, "multi", "org_m")
	b := e.browser(t)
	b.mustSignIn(adminTok)
	b.get("/console/keys/" + k.ID)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("csrf", b.csrf)
	mw.Close()
	for name, ct := range map[string]string{"multipart": mw.FormDataContentType(), "JSON": "application/json", "none": ""} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/keys/"+k.ID+"/disable", bytes.NewReader(body.Bytes()))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		p := b.do(req)
		if p.status != http.StatusUnsupportedMediaType || !strings.Contains(p.body, "Bad form") ||
			strings.Contains(p.body, "security token") {
			t.Errorf("%s: %d\n%s", name, p.status, p.body)
		}
	}
	if !e.key(t, k.ID).Enabled {
		t.Fatal("a refused form disabled the key")
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/keys/"+k.ID+"/disable",
		strings.NewReader(url.Values{"csrf": {b.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8")
	if p := b.do(req); p.status != 200 || e.key(t, k.ID).Enabled {
		t.Fatalf("urlencoded with a charset: %d", p.status)
	}
}

// TestPagePastTheLast: a page number past the last shows the last page.
func TestPagePastTheLast(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	for i := range 21 {
		e.createKey(t, fmt.Sprintf("paged-%02d", i), "org_p")
	}
	b := e.browser(t)
	b.mustSignIn(readTok)
	p := b.get("/console/keys?subject=org_p&page=9999")
	if p.status != 200 || !strings.Contains(p.body, "Page 2 of 2") || strings.Contains(p.body, "9999") ||
		strings.Count(p.body, `<td data-label="Name">`) != 1 {
		t.Fatalf("page 9999: %d\n%s", p.status, p.body)
	}
	if p := b.get("/console/keys?subject=nobody&page=3"); p.status != 200 || strings.Contains(p.body, "Page 3") {
		t.Fatalf("page 3 of nothing: %d\n%s", p.status, p.body)
	}
}

// TestAssets: the stylesheet and script only (no listing), linked with
// their content's digest and cached for good under it.
func TestAssets(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	for _, path := range []string{"/console/assets/", "/console/assets/nope.css", "/console/assets/x/console.css"} {
		if p := b.get(path); p.status != http.StatusNotFound || strings.Contains(p.body, `href="console.js"`) {
			t.Errorf("%s: %d, want 404 without a listing\n%s", path, p.status, p.body)
		}
	}
	signIn := b.get("/console/sign-in")
	for _, name := range []string{"console.css", "console.js"} {
		m := regexp.MustCompile(`"(/console/assets/` + regexp.QuoteMeta(name) + `)\?v=([0-9a-f]{12})"`).FindStringSubmatch(signIn.body)
		if m == nil {
			t.Fatalf("the page links %s without a version:\n%s", name, signIn.body)
		}
		p := b.get(m[1] + "?v=" + m[2])
		d := sha256.Sum256([]byte(p.body))
		if p.status != 200 || hex.EncodeToString(d[:6]) != m[2] {
			t.Errorf("%s: %d, version %s is not its content's", name, p.status, m[2])
		}
		if got := p.header.Get("Cache-Control"); !strings.Contains(got, "immutable") {
			t.Errorf("%s?v=: Cache-Control %q", name, got)
		}
		if got := b.get(m[1]).header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("%s without its version: Cache-Control %q, want no-cache", name, got)
		}
	}
}

// TestTemplatesUsePath: no template spells the console's path out.
func TestTemplatesUsePath(t *testing.T) {
	files, err := filepath.Glob("templates/*.html")
	if err != nil || len(files) == 0 {
		t.Fatalf("templates: %v %v", files, err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(raw), `"/console`) {
			t.Errorf("%s spells out /console: use the Path", f)
		}
	}
}

// TestSharedFailureBudget: with the admin API's budget, failed admin
// tokens at the API and failed sign-ins count together per address.
func TestSharedFailureBudget(t *testing.T) {
	_, rdb := redistest.Mini(t)
	clock := testclock.New()
	throttle := adminapi.ThrottleOptions{FailuresPerMinute: 1, Burst: 2, Now: clock.Now}
	throttle.Budget = adminapi.NewFailureBudget(throttle)
	e := newEnv(t, rdb, func(o *console.Options) { o.Throttle = throttle })
	verifier, err := keystore.NewVerifier(e.store, keystore.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { verifier.Close() })
	api, err := adminapi.New(adminapi.Options{Store: e.store, Verifier: verifier, Tokens: []adminapi.Token{adminTok}, Throttle: throttle})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		req := httptest.NewRequest(http.MethodGet, "/v1/api_keys", nil)
		req.RemoteAddr = "127.0.0.1:50000"
		req.Header.Set("Authorization", "Bearer wrong-token-0123456789abcdef0123456789")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d at the admin API: %d, want 401", i+1, rec.Code)
		}
	}
	b := e.browser(t)
	if p := b.signIn("wrong-token-0123456789abcdef0123456789"); p.status != http.StatusTooManyRequests {
		t.Fatalf("a sign-in after two failures at the admin API: %d, want 429", p.status)
	}
	clock.Advance(time.Minute)
	if p := b.signIn("wrong-token-0123456789abcdef0123456789"); p.status != http.StatusUnauthorized {
		t.Fatalf("a minute later: %d, want 401", p.status)
	}
}
