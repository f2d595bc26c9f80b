package console_test

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/console"
)

// signInFrom posts the sign-in form with the given Origin and extra
// headers and returns the status (303 on success: redirects are not
// followed).
func signInFrom(t *testing.T, e *env, origin string, header map[string]string) int {
	t.Helper()
	b := e.browser(t)
	b.get("/console/sign-in")
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/sign-in",
		strings.NewReader(url.Values{"token": {adminTok.Token}, "csrf": {b.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	b.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return b.do(req).status
}

func TestOrigin(t *testing.T) {
	_, rdb := redistest.Mini(t)
	self := netip.MustParsePrefix("127.0.0.1/32")

	plain := newEnv(t, rdb)
	host := strings.TrimPrefix(plain.srv.URL, "http://")
	for _, tc := range []struct {
		name, origin string
		header       map[string]string
		want         int
	}{
		{"no Origin", "", nil, http.StatusSeeOther},
		{"its own", "http://" + host, nil, http.StatusSeeOther},
		{"its own, upper case", "HTTP://" + strings.ToUpper(host), nil, http.StatusSeeOther},
		{"https on plain HTTP", "https://" + host, nil, http.StatusForbidden},
		{"another host", "http://evil.example", nil, http.StatusForbidden},
		{"another port", "http://" + strings.Split(host, ":")[0] + ":1", nil, http.StatusForbidden},
		{"null", "null", nil, http.StatusForbidden},
		// Without trusted proxies, forwarded headers change nothing.
		{"forwarded by an untrusted peer", "https://keys.example.com",
			map[string]string{"X-Forwarded-Host": "keys.example.com", "X-Forwarded-Proto": "https"}, http.StatusForbidden},
	} {
		if got := signInFrom(t, plain, tc.origin, tc.header); got != tc.want {
			t.Errorf("plain, %s: %d, want %d", tc.name, got, tc.want)
		}
	}

	proxied := newEnv(t, rdb, func(o *console.Options) { o.Throttle.TrustedProxies = []netip.Prefix{self} })
	for _, tc := range []struct {
		name, origin string
		header       map[string]string
		want         int
	}{
		{"forwarded host and proto", "https://keys.example.com",
			map[string]string{"X-Forwarded-Host": "keys.example.com", "X-Forwarded-Proto": "https"}, http.StatusSeeOther},
		{"the nearest proxy's values first", "https://keys.example.com",
			map[string]string{"X-Forwarded-Host": "keys.example.com, internal:8080", "X-Forwarded-Proto": "https, http"}, http.StatusSeeOther},
		{"forwarded proto differs", "http://keys.example.com",
			map[string]string{"X-Forwarded-Host": "keys.example.com", "X-Forwarded-Proto": "https"}, http.StatusForbidden},
		{"another site", "https://evil.example",
			map[string]string{"X-Forwarded-Host": "keys.example.com", "X-Forwarded-Proto": "https"}, http.StatusForbidden},
	} {
		if got := signInFrom(t, proxied, tc.origin, tc.header); got != tc.want {
			t.Errorf("behind a trusted proxy, %s: %d, want %d", tc.name, got, tc.want)
		}
	}

	// A proxy that rewrites Host (nginx's default proxy_pass) and sends no
	// forwarded headers: the configured origin is the console's.
	public := newEnv(t, rdb, func(o *console.Options) { o.Origin = "https://Keys.Example.com:443/" })
	for _, tc := range []struct {
		name, origin string
		want         int
	}{
		{"the public origin", "https://keys.example.com", http.StatusSeeOther},
		{"the upstream's own", "http://" + strings.TrimPrefix(public.srv.URL, "http://"), http.StatusForbidden},
		{"the public host over http", "http://keys.example.com", http.StatusForbidden},
	} {
		if got := signInFrom(t, public, tc.origin, nil); got != tc.want {
			t.Errorf("with Options.Origin, %s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestParseOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://keys.example.com":       "https://keys.example.com",
		"https://KEYS.example.com:443/":  "https://keys.example.com",
		"http://10.0.0.5:8080":           "http://10.0.0.5:8080",
		"http://[2001:db8::1]:80":        "http://[2001:db8::1]",
		" https://keys.example.com:8443": "https://keys.example.com:8443",
	} {
		if got, err := console.ParseOrigin(in); err != nil || got != want {
			t.Errorf("ParseOrigin(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "keys.example.com", "ftp://keys.example.com", "https://", "https://keys.example.com/console",
		"https://keys.example.com?x=1", "https://u:p@keys.example.com", "null"} {
		if got, err := console.ParseOrigin(bad); err == nil {
			t.Errorf("ParseOrigin(%q) = %q, want an error", bad, got)
		}
	}
}

func TestNewErrors(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	_, err := console.New(console.Options{AdminAPI: e.console.AdminAPI, Tokens: []adminapi.Token{verifyTok}, Redis: rdb})
	if !errors.Is(err, console.ErrNoSignInToken) {
		t.Errorf("verify tokens only: %v, want ErrNoSignInToken", err)
	}
	for name, o := range map[string]console.Options{
		"no Redis":   {AdminAPI: e.console.AdminAPI, Tokens: []adminapi.Token{adminTok}},
		"bad origin": {AdminAPI: e.console.AdminAPI, Tokens: []adminapi.Token{adminTok}, Redis: rdb, Origin: "keys.example.com"},
	} {
		if _, err := console.New(o); err == nil || errors.Is(err, console.ErrNoSignInToken) {
			t.Errorf("%s: %v, want an error other than ErrNoSignInToken", name, err)
		}
	}
}
