package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/console"
)

func TestNewChecksOptions(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	for _, tc := range []struct {
		name string
		opts console.Options
		want string
	}{
		{"no admin API", console.Options{Tokens: []adminapi.Token{adminTok}, Redis: rdb}, "AdminAPI is required"},
		{"no Redis", console.Options{AdminAPI: e.console.AdminAPI, Tokens: []adminapi.Token{adminTok}}, "Redis is required"},
		{"verify tokens only", console.Options{AdminAPI: e.console.AdminAPI, Tokens: []adminapi.Token{verifyTok}, Redis: rdb}, "no admin token"},
		{"short token", console.Options{AdminAPI: e.console.AdminAPI, Tokens: []adminapi.Token{{Name: "x", Role: "admin", Token: "short"}}, Redis: rdb}, "at least 32"},
	} {
		_, err := console.New(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "short") && tc.name == "short token" {
			t.Errorf("the error repeats the token: %v", err)
		}
	}
}

func TestSignIn(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)

	b := e.browser(t)
	p := b.get("/console/keys")
	if p.path != "/console/sign-in" || p.status != 200 || !strings.Contains(p.body, `<label for="token">Admin token</label>`) ||
		!strings.Contains(p.body, ">Sign in</button>") {
		t.Fatalf("signed out, /console/keys: %d at %s\n%s", p.status, p.path, p.body)
	}

	p = b.signIn("not-the-token-0123456789abcdef0123456789")
	if p.status != http.StatusUnauthorized || !strings.Contains(p.body, "not an admin token") {
		t.Fatalf("wrong token: %d\n%s", p.status, p.body)
	}
	if len(e.sessionKeys(t)) != 0 {
		t.Fatal("a wrong token opened a session")
	}
	p = b.signIn(verifyTok.Token)
	if p.status != http.StatusUnauthorized || len(e.sessionKeys(t)) != 0 {
		t.Fatalf("a verify token signed in: %d", p.status)
	}

	b.mustSignIn(adminTok)
	if n := len(e.sessionKeys(t)); n != 1 {
		t.Fatalf("%d sessions in Redis after a sign-in, want 1", n)
	}
	ttl := rdb.TTL(context.Background(), e.sessionKeys(t)[0]).Val()
	if ttl <= 0 || ttl > console.DefaultSessionTTL {
		t.Errorf("session TTL %v, want (0, %v]", ttl, console.DefaultSessionTTL)
	}
	if p := b.get("/console/sign-in"); p.path != "/console/keys" {
		t.Errorf("the sign-in page, signed in: at %s, want the keys", p.path)
	}

	p = b.post("/console/sign-out", nil)
	if p.path != "/console/sign-in" || len(e.sessionKeys(t)) != 0 {
		t.Fatalf("sign-out: at %s, %d sessions left", p.path, len(e.sessionKeys(t)))
	}
	if p := b.get("/console/keys"); p.path != "/console/sign-in" {
		t.Fatalf("after sign-out /console/keys is at %s", p.path)
	}
	if logs := e.logs.String(); strings.Contains(logs, adminTok.Token) || strings.Contains(logs, "not-the-token") {
		t.Fatalf("a token reached the log:\n%s", logs)
	}
}

func TestSignInWithoutFormToken(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.get("/console/sign-in")
	for name, form := range map[string]url.Values{
		"no CSRF token":    {"token": {adminTok.Token}},
		"wrong CSRF token": {"token": {adminTok.Token}, "csrf": {"forged"}},
	} {
		p := b.postRaw("/console/sign-in", form)
		if p.status != http.StatusForbidden || len(e.sessionKeys(t)) != 0 {
			t.Errorf("%s: %d, %d sessions; want 403 and none", name, p.status, len(e.sessionKeys(t)))
		}
	}
	// A form posted from another site is refused even with the right token.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/sign-in",
		strings.NewReader(url.Values{"token": {adminTok.Token}, "csrf": {b.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if p := b.do(req); p.status != http.StatusForbidden {
		t.Errorf("cross-origin sign-in: %d, want 403", p.status)
	}
}

func TestSignInThrottled(t *testing.T) {
	_, rdb := redistest.Mini(t)
	clock := testclock.New()
	e := newEnv(t, rdb, func(o *console.Options) {
		o.Throttle = adminapi.ThrottleOptions{FailuresPerMinute: 1, Burst: 2, Now: clock.Now}
	})
	b := e.browser(t)
	for i := range 2 {
		if p := b.signIn("wrong-token-0123456789abcdef0123456789"); p.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d, want 401", i+1, p.status)
		}
	}
	p := b.signIn("wrong-token-0123456789abcdef0123456789")
	if p.status != http.StatusTooManyRequests || p.header.Get("Retry-After") == "" || !strings.Contains(p.body, "Too many failed sign-ins") {
		t.Fatalf("third failure: %d Retry-After %q\n%s", p.status, p.header.Get("Retry-After"), p.body)
	}
	// The right token is never throttled, whoever shares the address.
	b.mustSignIn(adminTok)
	other := e.browser(t)
	if p := other.signIn("wrong-token-0123456789abcdef0123456789"); p.status != http.StatusTooManyRequests {
		t.Fatalf("another failure from the same address: %d, want 429", p.status)
	}
	clock.Advance(time.Minute)
	if p := other.signIn("wrong-token-0123456789abcdef0123456789"); p.status != http.StatusUnauthorized {
		t.Fatalf("a minute later: %d, want 401", p.status)
	}
}

func TestCookies(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tls        bool
		secureOpt  bool
		wantSecure bool
	}{
		{"plain HTTP", false, false, false},
		{"TLS", true, false, true},
		{"plain HTTP behind a TLS proxy", false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rdb := redistest.Mini(t)
			e := newEnvServer(t, rdb, tc.tls, func(o *console.Options) { o.SecureCookies = tc.secureOpt })
			b := e.browser(t)
			b.get("/console/sign-in")
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/sign-in",
				strings.NewReader(url.Values{"token": {adminTok.Token}, "csrf": {b.csrf}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			b.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			resp, err := b.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var found bool
			for _, c := range resp.Cookies() {
				if c.Name != "keygate_console" {
					continue
				}
				found = true
				if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console" || c.Secure != tc.wantSecure ||
					c.MaxAge != int(console.DefaultSessionTTL.Seconds()) {
					t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/console, Secure=%v, Max-Age %v",
						c, tc.wantSecure, console.DefaultSessionTTL)
				}
				if strings.Contains(c.Value, adminTok.Token) || len(c.Value) < 40 {
					t.Errorf("session cookie value %q", c.Value)
				}
			}
			if !found {
				t.Fatalf("no session cookie: %v", resp.Header["Set-Cookie"])
			}

			// The sign-in form's token and the new secret's key: the same
			// attributes, for the browser session and two minutes.
			attrs := func(what string, resp *http.Response, name string, maxAge int) {
				t.Helper()
				for _, c := range resp.Cookies() {
					if c.Name != name {
						continue
					}
					if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console" || c.Secure != tc.wantSecure ||
						c.MaxAge != maxAge || len(c.Value) < 40 {
						t.Errorf("%s: cookie %+v: want HttpOnly, SameSite=Strict, Path=/console, Secure=%v, Max-Age %d",
							what, c, tc.wantSecure, maxAge)
					}
					return
				}
				t.Errorf("%s: no %s cookie: %v", what, name, resp.Header["Set-Cookie"])
			}
			fresh, err := e.srv.Client().Get(e.srv.URL + "/console/sign-in")
			if err != nil {
				t.Fatal(err)
			}
			fresh.Body.Close()
			attrs("the sign-in page", fresh, "keygate_console_signin", 0)
			b.get("/console/keys/new")
			req, _ = http.NewRequest(http.MethodPost, e.srv.URL+"/console/keys",
				strings.NewReader(url.Values{"csrf": {b.csrf}, "name": {"cookie"}, "subject": {"org_c"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			created, err := b.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			created.Body.Close()
			attrs("a create", created, "keygate_console_once", 120)
		})
	}
}

// scriptTag, handlerAttr and styleAttr find what the policy forbids: an
// inline script (a script tag without src), an event handler attribute,
// an inline style.
var (
	scriptTag   = regexp.MustCompile(`(?i)<script\b[^>]*>`)
	handlerAttr = regexp.MustCompile(`(?i)\son[a-z]+\s*=`)
	styleAttr   = regexp.MustCompile(`(?i)\sstyle\s*=|<style\b|javascript:`)
)

// checkHeaders fails t unless p has the console's security headers and no
// inline script, handler or style.
func checkHeaders(t *testing.T, name string, p *page) {
	t.Helper()
	for _, problem := range headerProblems(p) {
		t.Errorf("%s: %s", name, problem)
	}
}

func headerProblems(p *page) []string {
	var out []string
	for name, want := range map[string]string{"Content-Security-Policy": console.ContentSecurityPolicy,
		"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"} {
		if got := p.header.Get(name); got != want {
			out = append(out, fmt.Sprintf("%s %q, want %q", name, got, want))
		}
	}
	for _, tag := range scriptTag.FindAllString(p.body, -1) {
		if !strings.Contains(tag, " src=") {
			out = append(out, fmt.Sprintf("an inline script %q, which the policy forbids", tag))
		}
	}
	if m := handlerAttr.FindString(p.body); m != "" {
		out = append(out, fmt.Sprintf("an event handler attribute %q, which the policy forbids", m))
	}
	if m := styleAttr.FindString(p.body); m != "" {
		out = append(out, fmt.Sprintf("%q, which the policy forbids", m))
	}
	return out
}

func TestHeaderProblemsFindsInlineScript(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Security-Policy", console.ContentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	if got := headerProblems(&page{header: h, body: `<script src="/console/assets/console.js" defer></script><button data-on="x">`}); got != nil {
		t.Errorf("a good page: %v", got)
	}
	for _, body := range []string{`<script type="module">x()</script>`, `<SCRIPT>x()</SCRIPT>`, `<button onClick="x()">`,
		`<a href="#" onmouseover = "x()">`, `<p style="color:red">`} {
		if headerProblems(&page{header: h, body: body}) == nil {
			t.Errorf("no problem found in %q", body)
		}
	}
	if headerProblems(&page{header: http.Header{}}) == nil {
		t.Error("no problem found without the headers")
	}
}

// TestHeadersOnEveryPage checks the Content-Security-Policy and
// X-Frame-Options of every page, signed in or not, errors, redirects and
// 503s included, and that no page has an inline script or style.
func TestHeadersOnEveryPage(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.createKey(t, "headers", "user_h")
	anon := e.browser(t)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	check := func(name string, p *page) { t.Helper(); checkHeaders(t, name, p) }
	check("sign-in", anon.get("/console/sign-in"))
	check("404 signed out", anon.get("/console/nowhere"))
	check("CSRF refusal", b.postRaw("/console/keys/"+k.ID+"/disable", url.Values{}))
	for _, path := range []string{"/console/keys", "/console/keys?include_invalid=on&query=head", "/console/keys/" + k.ID,
		"/console/keys/" + k.ID + "?range=hour", "/console/keys/" + k.ID + "?range=month",
		"/console/keys/new", "/console/secret", "/console/revoke-subject", "/console/audit", "/console/audit?action=api_key.created",
		"/console/keys/ak_00000000000000000000000000000000", "/console/nowhere", "/console/assets/console.css", "/console/assets/console.js"} {
		p := b.get(path)
		check(path, p)
		if strings.HasPrefix(path, "/console/keys/ak_0000") || path == "/console/nowhere" {
			if p.status != http.StatusNotFound {
				t.Errorf("%s: %d, want 404", path, p.status)
			}
		} else if p.status != 200 {
			t.Errorf("%s: %d, want 200\n%s", path, p.status, p.body)
		}
	}
	// Redirects, the mux's own included (it cleans /console//keys before
	// the console sees the request), and a method the mux refuses.
	b.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for path, want := range map[string]int{"/console//keys": http.StatusMovedPermanently, "/console/./audit": http.StatusMovedPermanently,
		"/console": http.StatusSeeOther, "/console/": http.StatusSeeOther} {
		p := b.get(path)
		if p.status != want && !(p.status == http.StatusTemporaryRedirect && want == http.StatusMovedPermanently) {
			t.Errorf("%s: %d, want a redirect", path, p.status)
		}
		check(path, p)
	}
	req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/console/keys", nil)
	check("PUT /console/keys", b.do(req))
	b.http.CheckRedirect = nil
	// The store down: 503 pages.
	mr.Close()
	for _, path := range []string{"/console/keys", "/console/keys/" + k.ID} {
		p := b.get(path)
		if p.status != http.StatusServiceUnavailable {
			t.Errorf("%s with Redis down: %d, want 503", path, p.status)
		}
		check(path+" (503)", p)
	}
}

// TestFormsWithoutCSRFChangeNothing posts every state-changing form
// without its CSRF token, and with a wrong one.
func TestFormsWithoutCSRFChangeNothing(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.createKey(t, "victim", "user_v")
	b := e.browser(t)
	b.mustSignIn(adminTok)
	forms := map[string]url.Values{
		"/console/keys":                      {"name": {"made"}, "subject": {"user_v"}},
		"/console/keys/" + k.ID + "/revoke":  {"confirm": {"yes"}, "reason": {"forged"}},
		"/console/keys/" + k.ID + "/roll":    {"grace": {"0"}, "confirm": {"yes"}},
		"/console/keys/" + k.ID + "/disable": {},
		"/console/revoke-subject":            {"subject": {"user_v"}, "confirm": {"yes"}},
		"/console/sign-out":                  {},
	}
	for path, form := range forms {
		for _, csrf := range []string{"", "wrong", strings.Repeat("A", 43)} {
			f := url.Values{}
			for k, v := range form {
				f[k] = v
			}
			if csrf != "" {
				f.Set("csrf", csrf)
			}
			p := b.postRaw(path, f)
			if p.status != http.StatusForbidden || !strings.Contains(p.body, "security token") {
				t.Errorf("POST %s with csrf %q: %d, want 403\n%s", path, csrf, p.status, p.body)
			}
		}
	}
	got := e.key(t, k.ID)
	if got.Revoked || !got.Enabled || got.RolledTo != nil {
		t.Fatalf("a forged form changed the key: %+v", got)
	}
	list, _ := e.store.List(context.Background(), keyListAll("user_v"))
	if list.TotalCount != 1 {
		t.Fatalf("a forged create made a key: %d keys", list.TotalCount)
	}
	if len(e.sessionKeys(t)) != 1 {
		t.Fatal("a forged sign-out ended the session")
	}
}

func TestReadRole(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.createKey(t, "watched", "user_r")
	b := e.browser(t)
	b.mustSignIn(readTok)
	for _, path := range []string{"/console/keys", "/console/keys/" + k.ID, "/console/audit", "/console/revoke-subject", "/console/keys/new"} {
		p := b.get(path)
		if p.status != 200 {
			t.Fatalf("%s as read: %d", path, p.status)
		}
		for _, control := range []string{">Create a key<", ">Create key<", ">Revoke<", ">Roll<", ">Disable<", ">Enable<",
			"Revoke every key of a subject</a>", "Revoke all keys of the subject", `action="/console/keys/` + k.ID + `/`} {
			if strings.Contains(p.body, control) {
				t.Errorf("%s as read offers %q", path, control)
			}
		}
	}
	b.get("/console/keys/" + k.ID) // its CSRF token
	for _, tc := range []struct {
		path string
		form url.Values
	}{
		{"/console/keys/" + k.ID + "/revoke", url.Values{"confirm": {"yes"}}},
		{"/console/keys/" + k.ID + "/disable", nil},
		{"/console/keys/" + k.ID + "/roll", url.Values{"grace": {"0"}, "confirm": {"yes"}}},
		{"/console/keys", url.Values{"name": {"n"}, "subject": {"user_r"}}},
		{"/console/revoke-subject", url.Values{"subject": {"user_r"}, "confirm": {"yes"}}},
	} {
		p := b.post(tc.path, tc.form)
		if p.status != http.StatusForbidden || !strings.Contains(p.body, "has the role read") {
			t.Errorf("forged POST %s as read: %d, want 403\n%s", tc.path, p.status, p.body)
		}
	}
	got := e.key(t, k.ID)
	if got.Revoked || !got.Enabled || got.RolledTo != nil {
		t.Fatalf("a read token changed the key: %+v", got)
	}
	if list, _ := e.store.List(context.Background(), keyListAll("user_r")); list.TotalCount != 1 {
		t.Fatalf("a read token made a key: %d keys", list.TotalCount)
	}
}

func TestSessionExpiry(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb, func(o *console.Options) { o.SessionTTL = 10 * time.Minute })
	k := e.createKey(t, "kept", "user_x")
	b := e.browser(t)
	b.mustSignIn(adminTok)
	b.get("/console/keys/" + k.ID)
	mr.FastForward(11 * time.Minute)
	p := b.get("/console/keys")
	if p.path != "/console/sign-in" || !strings.Contains(p.body, "Your session has ended") {
		t.Fatalf("after the session's TTL: %d at %s\n%s", p.status, p.path, p.body)
	}
	// A form posted on the expired session changes nothing.
	p = b.post("/console/keys/"+k.ID+"/disable", nil)
	if p.path != "/console/sign-in" || !e.key(t, k.ID).Enabled {
		t.Fatalf("a POST on an expired session: at %s, enabled %v", p.path, e.key(t, k.ID).Enabled)
	}
}

// TestTokenRemovedEndsSessions signs in, then serves a console whose
// tokens file no longer holds that token (or holds a new token under the
// same name): the session ends at its next request.
func TestTokenRemovedEndsSessions(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	for _, tc := range []struct {
		name   string
		tokens []adminapi.Token
	}{
		{"token replaced", []adminapi.Token{{Name: adminTok.Name, Role: adminapi.RoleAdmin, Token: "a-new-token-0123456789abcdef0123456789"}, readTok}},
		{"token removed", []adminapi.Token{readTok}},
	} {
		later := newEnv(t, rdb, func(o *console.Options) { o.Tokens = tc.tokens })
		lb := later.browser(t)
		lb.http.Jar = b.http.Jar
		u, _ := url.Parse(later.srv.URL)
		old, _ := url.Parse(e.srv.URL)
		lb.http.Jar.SetCookies(u, b.http.Jar.Cookies(old))
		if p := lb.get("/console/keys"); p.path != "/console/sign-in" {
			t.Errorf("%s: at %s, want the sign-in page", tc.name, p.path)
		}
	}
}

// TestSecretShownOnce creates a key through the form: the page after it
// shows the secret once; reloading it, or any later page, never does, and
// neither Redis nor the log ever holds it.
func TestSecretShownOnce(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	b.get("/console/keys/new")
	p := b.post("/console/keys", url.Values{"name": {"billing"}, "subject": {"org_7"}, "scopes": {"reports:read, reports:write"},
		"description": {"for the billing job"}, "expires_days": {"30"}, "credits": {"100"}, "rate_limit": {"60"}})
	secret := regexp.MustCompile(`value="(ak_[^"]+)"`).FindStringSubmatch(p.body)
	if p.status != 200 || p.path != "/console/secret" || secret == nil || !strings.Contains(p.body, "shown this once") ||
		!strings.Contains(p.body, ">Copy secret</button>") {
		t.Fatalf("after create: %d at %s\n%s", p.status, p.path, p.body)
	}
	if code := e.forwardAuth(t, secret[1]); code != 200 {
		t.Fatalf("forward-auth with the new secret: %d", code)
	}
	id := regexp.MustCompile(`/console/keys/(ak_[0-9a-f]+)`).FindStringSubmatch(p.body)[1]
	k := e.key(t, id)
	if k.Name != "billing" || k.Subject != "org_7" || strings.Join(k.Scopes, " ") != "reports:read reports:write" ||
		k.Expiration == nil || k.Credits == nil || k.Credits.Remaining != 99 || len(k.RateLimits) != 1 ||
		k.CreatedBy == nil || *k.CreatedBy != "console:ops" {
		t.Fatalf("created key %+v", k)
	}

	again := b.get("/console/secret")
	if strings.Contains(again.body, secret[1]) || !strings.Contains(again.body, "Secret no longer shown") {
		t.Fatalf("reloading the secret page:\n%s", again.body)
	}
	var seen strings.Builder
	for _, path := range []string{"/console/keys", "/console/keys/" + id, "/console/audit", "/console/audit?api_key_id=" + id} {
		seen.WriteString(b.get(path).body)
	}
	for where, text := range map[string]string{"a later page": seen.String(), "the log": e.logs.String(), "Redis": e.redisDump(t)} {
		if strings.Contains(text, secret[1]) {
			t.Errorf("the secret is in %s", where)
		}
		if strings.Contains(text, adminTok.Token) {
			t.Errorf("the admin token is in %s", where)
		}
	}
	// Another session cannot open the secret's page, even with its cookie.
	other := e.browser(t)
	other.mustSignIn(adminTok)
	b.get("/console/keys/new")
	b.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/keys",
		strings.NewReader(url.Values{"csrf": {b.csrf}, "name": {"second"}, "subject": {"org_7"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if p := b.do(req); p.status != http.StatusSeeOther || p.header.Get("Location") != "/console/secret" {
		t.Fatalf("create: %d to %q", p.status, p.header.Get("Location"))
	}
	u, _ := url.Parse(e.srv.URL + "/console/secret")
	for _, c := range b.http.Jar.Cookies(u) {
		if c.Name == "keygate_console_once" {
			other.http.Jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: c.Value, Path: "/console"}})
		}
	}
	if p := other.get("/console/secret"); !strings.Contains(p.body, "Secret no longer shown") || strings.Contains(p.body, `value="ak_`) {
		t.Fatalf("another session opened the secret's page:\n%s", p.body)
	}
}

func TestCreateRefused(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	b.get("/console/keys/new")
	for _, tc := range []struct {
		form url.Values
		want string
	}{
		{url.Values{"name": {"x"}, "subject": {"s"}, "expires_days": {"0"}}, "Expires in (days)"},
		{url.Values{"name": {"x"}, "subject": {"s"}, "credits": {"lots"}}, "Credits must be"},
		{url.Values{"name": {"x"}, "subject": {"s"}, "rate_limit": {"-1"}}, "Requests per minute"},
		{url.Values{"name": {"x"}, "subject": {""}}, "subject"},
		{url.Values{"name": {strings.Repeat("n", 300)}, "subject": {"s"}}, "name"},
	} {
		p := b.post("/console/keys", tc.form)
		if p.status != http.StatusBadRequest || !strings.Contains(p.body, tc.want) || !strings.Contains(p.body, ">Create key</button>") {
			t.Errorf("create %v: %d, want 400 with %q and the form again\n%s", tc.form, p.status, tc.want, p.body)
		}
		if tc.form.Get("name") == "x" && !strings.Contains(p.body, `value="x"`) {
			t.Errorf("create %v: the form lost what was typed", tc.form)
		}
	}
	if list, _ := e.store.List(context.Background(), keyListAll("")); list.TotalCount != 0 {
		t.Fatalf("a refused create made %d keys", list.TotalCount)
	}
}

func TestMutations(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.createKey(t, "svc", "org_m")
	b := e.browser(t)
	b.mustSignIn(adminTok)

	p := b.get("/console/keys/" + k.ID)
	for _, control := range []string{">Disable</button>", ">Roll</button>", ">Revoke</button>", `<label for="reason">Reason</label>`,
		`<label for="grace">The old key keeps working for</label>`, `<label for="confirm">Yes, revoke this key now</label>`} {
		if !strings.Contains(p.body, control) {
			t.Errorf("the key page lacks %q", control)
		}
	}
	p = b.post("/console/keys/"+k.ID+"/disable", nil)
	if p.path != "/console/keys/"+k.ID || !strings.Contains(p.body, "The key is disabled") || e.key(t, k.ID).Enabled {
		t.Fatalf("disable: at %s, enabled %v", p.path, e.key(t, k.ID).Enabled)
	}
	if !strings.Contains(p.body, ">Enable</button>") || strings.Contains(p.body, ">Disable</button>") {
		t.Error("a disabled key's page does not offer Enable instead of Disable")
	}
	if code := e.forwardAuth(t, k.Secret); code != 401 {
		t.Errorf("forward-auth with a disabled key: %d", code)
	}
	p = b.post("/console/keys/"+k.ID+"/enable", nil)
	if !strings.Contains(p.body, "The key is enabled") || !e.key(t, k.ID).Enabled || e.forwardAuth(t, k.Secret) != 200 {
		t.Fatal("enable did not enable the key")
	}

	p = b.post("/console/keys/"+k.ID+"/revoke", url.Values{"reason": {"leaked"}})
	if p.status != http.StatusBadRequest || e.key(t, k.ID).Revoked {
		t.Fatalf("revoke without the confirmation: %d, revoked %v", p.status, e.key(t, k.ID).Revoked)
	}
	b.get("/console/keys/" + k.ID)
	p = b.post("/console/keys/"+k.ID+"/revoke", url.Values{"reason": {"leaked in a log"}, "confirm": {"yes"}})
	got := e.key(t, k.ID)
	if !got.Revoked || got.RevocationReason == nil || *got.RevocationReason != "leaked in a log" ||
		!strings.Contains(p.body, "The key is revoked") || !strings.Contains(p.body, "leaked in a log") {
		t.Fatalf("revoke: %+v\n%s", got, p.body)
	}
	if code := e.forwardAuth(t, k.Secret); code != 401 {
		t.Fatalf("forward-auth after revoke: %d, want 401", code)
	}
	if strings.Contains(p.body, ">Roll</button>") || strings.Contains(p.body, ">Revoke</button>") {
		t.Error("a revoked key's page still offers changes")
	}

	// The audit trail on the key page names the token and the change,
	// recorded by the admin API itself.
	for _, want := range []string{"api_key.disabled", "api_key.enabled", "api_key.revoked", "ops"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the key's audit trail lacks %q", want)
		}
	}
	page, err := audit.New(rdb, audit.Options{}).List(context.Background(), audit.Filter{APIKeyID: k.ID, Action: audit.Revoked})
	if err != nil || len(page.Data) != 1 || page.Data[0].Actor.Name != "ops" || page.Data[0].RemoteAddr != "127.0.0.1" {
		t.Fatalf("audit events of the revoke: %+v %v", page, err)
	}
}

func TestRoll(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.createKey(t, "rolled", "org_r")
	b := e.browser(t)
	b.mustSignIn(adminTok)
	b.get("/console/keys/" + k.ID)
	// Revoking the old key at once needs the confirmation box, as a revoke
	// does.
	p := b.post("/console/keys/"+k.ID+"/roll", url.Values{"grace": {"0"}})
	if p.status != http.StatusBadRequest || !strings.Contains(p.body, "Not rolled: please confirm") ||
		e.key(t, k.ID).RolledTo != nil || e.forwardAuth(t, k.Secret) != 200 {
		t.Fatalf("roll with no grace, unconfirmed: %d\n%s", p.status, p.body)
	}
	if !strings.Contains(b.get("/console/keys/"+k.ID).body, `<label for="roll-confirm">`) {
		t.Fatal("the roll form has no confirmation box")
	}
	p = b.post("/console/keys/"+k.ID+"/roll", url.Values{"grace": {"0"}, "confirm": {"yes"}})
	secret := regexp.MustCompile(`value="(ak_[^"]+)"`).FindStringSubmatch(p.body)
	if p.path != "/console/secret" || secret == nil || !strings.Contains(p.body, "It replaces") {
		t.Fatalf("roll: at %s\n%s", p.path, p.body)
	}
	old := e.key(t, k.ID)
	if old.RolledTo == nil || e.forwardAuth(t, k.Secret) != 401 || e.forwardAuth(t, secret[1]) != 200 {
		t.Fatalf("after a roll with no grace: old %+v", old)
	}
	if strings.Contains(b.get("/console/keys/"+*old.RolledTo).body, secret[1]) {
		t.Fatal("the new key's page shows its secret")
	}
	b.get("/console/keys/" + *old.RolledTo)
	if p := b.post("/console/keys/"+*old.RolledTo+"/roll", url.Values{"grace": {"forever"}}); p.status != http.StatusBadRequest {
		t.Fatalf("roll with a bad grace: %d", p.status)
	}
}

func TestRevokeSubject(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	a, c := e.createKey(t, "one", "org_bulk"), e.createKey(t, "two", "org_bulk")
	keep := e.createKey(t, "other", "org_keep")
	b := e.browser(t)
	b.mustSignIn(adminTok)
	p := b.get("/console/revoke-subject?subject=org_bulk")
	if !strings.Contains(p.body, `value="org_bulk"`) || !strings.Contains(p.body, ">Revoke all keys of the subject</button>") {
		t.Fatalf("bulk revoke page:\n%s", p.body)
	}
	if p := b.post("/console/revoke-subject", url.Values{"subject": {"org_bulk"}}); p.status != http.StatusBadRequest || e.key(t, a.ID).Revoked {
		t.Fatalf("bulk revoke without confirmation: %d", p.status)
	}
	b.get("/console/revoke-subject")
	p = b.post("/console/revoke-subject", url.Values{"subject": {"org_bulk"}, "reason": {"customer left"}, "confirm": {"yes"}})
	if !strings.Contains(p.body, "Revoked 2 keys of org_bulk") {
		t.Fatalf("bulk revoke:\n%s", p.body)
	}
	if !e.key(t, a.ID).Revoked || !e.key(t, c.ID).Revoked || e.key(t, keep.ID).Revoked {
		t.Fatal("bulk revoke revoked the wrong keys")
	}
	p = b.get("/console/audit?action=api_key.bulk_revoked")
	if !strings.Contains(p.body, "org_bulk") || !strings.Contains(p.body, "customer left") {
		t.Fatalf("the audit log does not show the bulk revoke:\n%s", p.body)
	}
}

func TestKeyListFiltersAndPages(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	for i := range 23 {
		e.createKey(t, fmt.Sprintf("batch-%02d", i), "org_many")
	}
	e.createKey(t, "lonely", "org_one")
	gone := e.createKey(t, "gone", "org_one")
	if _, err := e.store.Revoke(context.Background(), gone.ID, nil); err != nil {
		t.Fatal(err)
	}
	b := e.browser(t)
	b.mustSignIn(readTok)
	rows := func(p *page) int { return strings.Count(p.body, `<td data-label="Name">`) }

	p := b.get("/console/keys?subject=org_many")
	if rows(p) != 20 || !strings.Contains(p.body, "Keys 1 to 20 of 23") || !strings.Contains(p.body, ">Next page<") ||
		strings.Contains(p.body, ">Previous page<") {
		t.Fatalf("page 1: %d rows\n%s", rows(p), p.body)
	}
	next := regexp.MustCompile(`href="([^"]+)" rel="next"`).FindStringSubmatch(p.body)[1]
	p = b.get(strings.ReplaceAll(next, "&amp;", "&"))
	if rows(p) != 3 || !strings.Contains(p.body, "Keys 21 to 23 of 23") || !strings.Contains(p.body, ">Previous page<") {
		t.Fatalf("page 2: %d rows\n%s", rows(p), p.body)
	}
	if p := b.get("/console/keys?query=LONE"); rows(p) != 1 || !strings.Contains(p.body, "lonely") {
		t.Fatalf("search: %d rows", rows(p))
	}
	if p := b.get("/console/keys?subject=org_one"); rows(p) != 1 || strings.Contains(p.body, ">gone<") {
		t.Fatalf("subject without invalid keys: %d rows", rows(p))
	}
	if p := b.get("/console/keys?subject=org_one&include_invalid=on"); rows(p) != 2 || !strings.Contains(p.body, "Revoked") {
		t.Fatalf("subject with invalid keys: %d rows", rows(p))
	}
	if p := b.get("/console/keys?page=-4"); p.status != 200 || !strings.Contains(p.body, "Keys 1 to 20 of 24") {
		t.Fatalf("a bad page number: %d", p.status)
	}
}

func TestUsageChart(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.createKey(t, "busy", "org_u")
	for range 3 {
		if code := e.forwardAuth(t, k.Secret); code != 200 {
			t.Fatalf("forward-auth: %d", code)
		}
	}
	if _, err := e.store.Update(context.Background(), k.ID, keystore.UpdateParams{Enabled: new(false)}); err != nil {
		t.Fatal(err)
	}
	if code := e.forwardAuth(t, k.Secret); code != 401 {
		t.Fatalf("forward-auth with a disabled key: %d", code)
	}
	if err := e.store.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := e.browser(t)
	b.mustSignIn(readTok)
	p := b.get("/console/keys/" + k.ID)
	if !strings.Contains(p.body, "3 verifications admitted, 1 refused") || !strings.Contains(p.body, `<rect class="valid"`) ||
		!strings.Contains(p.body, `<rect class="refused"`) || !strings.Contains(p.body, `role="img"`) {
		t.Fatalf("the usage chart:\n%s", p.body)
	}
}

func TestAuditFilters(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	var ids []string
	for i := range 3 {
		b.get("/console/keys/new")
		p := b.post("/console/keys", url.Values{"name": {fmt.Sprintf("a%d", i)}, "subject": {"org_a"}})
		ids = append(ids, regexp.MustCompile(`/console/keys/(ak_[0-9a-f]+)`).FindStringSubmatch(p.body)[1])
	}
	b.get("/console/keys/" + ids[0])
	b.post("/console/keys/"+ids[0]+"/disable", nil)
	p := b.get("/console/audit?action=api_key.disabled")
	if strings.Count(p.body, "<td data-label=\"Action\">") != 1 || !strings.Contains(p.body, ids[0]) {
		t.Fatalf("filter by action:\n%s", p.body)
	}
	p = b.get("/console/audit?api_key_id=" + ids[1])
	if strings.Count(p.body, "<td data-label=\"Action\">") != 1 || !strings.Contains(p.body, "api_key.created") {
		t.Fatalf("filter by key:\n%s", p.body)
	}
	if p := b.get("/console/audit?actor=nobody"); !strings.Contains(p.body, "No event matches") {
		t.Fatalf("filter by an unknown actor:\n%s", p.body)
	}
	if p := b.get("/console/audit?action=api_key.exploded"); p.status != http.StatusBadRequest {
		t.Fatalf("a bad action: %d", p.status)
	}
}

// TestStoreDown: with Redis gone, pages answer 503 with a page that says
// so, never a 500 or a panic.
func TestStoreDown(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	b := e.browser(t)
	b.mustSignIn(adminTok)
	mr.Close()
	for _, path := range []string{"/console/keys", "/console/sign-in"} {
		if p := b.get(path); p.status != http.StatusServiceUnavailable || !strings.Contains(p.body, "The key store is unavailable") {
			t.Errorf("%s with Redis down: %d\n%s", path, p.status, p.body)
		}
	}
	anon := e.browser(t)
	if p := anon.get("/console/sign-in"); p.status != 200 {
		t.Errorf("the sign-in page without a session, Redis down: %d", p.status)
	}
	if p := anon.post("/console/sign-in", url.Values{"token": {adminTok.Token}}); p.status != http.StatusServiceUnavailable {
		t.Errorf("a sign-in with Redis down: %d", p.status)
	}
}

func TestAuditPages(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	log := audit.New(rdb, audit.Options{})
	for i := range 60 {
		ev := &audit.Event{Actor: audit.Actor{Type: audit.ActorAdminToken, Name: "seed"}, Action: audit.Updated,
			APIKeyID: fmt.Sprintf("ak_%032x", i), Subject: "org_p", Changes: map[string]audit.Change{}}
		if err := log.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser(t)
	b.mustSignIn(readTok)
	rows := func(p *page) int { return strings.Count(p.body, `<td data-label="Action">`) }
	p := b.get("/console/audit?actor=seed")
	if rows(p) != 50 || !strings.Contains(p.body, fmt.Sprintf("ak_%032x", 59)) || strings.Contains(p.body, ">Newest events<") {
		t.Fatalf("first page: %d rows", rows(p))
	}
	older := regexp.MustCompile(`href="([^"]+)" rel="next">Older events`).FindStringSubmatch(p.body)
	if older == nil {
		t.Fatal("no Older events link")
	}
	p = b.get(strings.ReplaceAll(older[1], "&amp;", "&"))
	if rows(p) != 10 || !strings.Contains(p.body, fmt.Sprintf("ak_%032x", 0)) || strings.Contains(p.body, fmt.Sprintf("ak_%032x", 59)) ||
		!strings.Contains(p.body, ">Newest events<") || strings.Contains(p.body, "Older events") {
		t.Fatalf("second page: %d rows\n%s", rows(p), p.body)
	}
}
