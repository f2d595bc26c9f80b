package sidecar

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
)

// caddySnippet is the documented Caddyfile; the test runs it as it is,
// with a global options block in front (no admin endpoint, no automatic
// HTTPS: several Caddys may run on one machine; loopback only) and only
// these three strings replaced.
const (
	caddySnippet  = "../deploy/forward-auth/Caddyfile"
	caddyKeygate  = "127.0.0.1:8080"
	caddyApp      = "127.0.0.1:3000"
	caddyListen   = ":8000 {"
	caddyGlobal   = "{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\n\n"
	caddyInstall  = "caddy not found on PATH: install it (Debian: apt-get install -y caddy) or run .ci/setup"
	caddyStartMax = 10 * time.Second
)

// startCaddy runs Debian's caddy with the documented Caddyfile pointed at
// keygate and app, and returns its base URL; caddy is stopped at cleanup.
func startCaddy(t *testing.T, keygate, app string) string {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	if err != nil {
		t.Fatal(caddyInstall)
	}
	snippet, err := os.ReadFile(caddySnippet)
	if err != nil {
		t.Fatalf("reading the documented Caddyfile: %v", err)
	}
	for _, s := range []string{caddyKeygate, caddyApp, caddyListen} {
		if n := strings.Count(string(snippet), s); n < 1 || (s == caddyListen && n != 1) {
			t.Fatalf("%s holds %q %d times: the test and the documented config have drifted", caddySnippet, s, n)
		}
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr := closedAddr(t)
		conf := caddyGlobal + strings.NewReplacer(caddyKeygate, keygate, caddyApp, app, caddyListen, "http://:"+port(addr)+" {").Replace(string(snippet))
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if lastErr = runCaddy(t, bin, dir, path, addr); lastErr == nil {
			return "http://" + addr
		}
	}
	t.Fatalf("starting caddy: %v", lastErr)
	return ""
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func runCaddy(t *testing.T, bin, dir, conf, addr string) error {
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	// Caddy keeps state under $HOME and the XDG directories: a directory
	// of the test's own.
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(caddyStartMax)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
				if t.Failed() {
					t.Logf("caddy's log:\n%s", lastLines(out.String(), 30))
				}
			})
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("caddy exited (%v): %s", err, lastLines(out.String(), 10))
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			return errors.New("caddy did not accept connections in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestCaddyForwardAuth runs the documented Caddyfile
// (deploy/forward-auth/Caddyfile) in Debian's caddy, with forward_auth
// asking keygate's forward-auth endpoint.
func TestCaddyForwardAuth(t *testing.T) {
	proc := redistest.Start(t)
	rdb := redis.NewClient(redistest.ClientOptions(proc.Addr))
	t.Cleanup(func() { rdb.Close() })
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	keygate := httptest.NewServer(forwardAuthMux(t, e, ForwardAuthOptions{}))
	t.Cleanup(keygate.Close)
	app := newUpstream(t)
	base := startCaddy(t, strings.TrimPrefix(keygate.URL, "http://"), strings.TrimPrefix(app.URL, "http://"))
	c := &http.Client{Timeout: 30 * time.Second}

	allowed := []struct {
		name, path string
		header     http.Header
		key        *keystore.APIKey
		claims     string // "" when the app must get no claims header
	}{
		{"valid key with claims, spoofed identity replaced", "/orders/1",
			with(bearer(k.full.Secret), "X-Api-Key-Subject", "user_admin", "X-Api-Key-Claims", `{"role":"admin"}`), k.full, `{"plan":"pro","seats":3}`},
		{"key without claims, spoofed claims dropped", "/orders/1",
			with(http.Header{"X-Api-Key": {k.limited.Secret}}, "X-Api-Key-Claims", `{"role":"admin"}`), k.limited, ""},
		{"key without claims, none sent", "/orders/1", bearer(k.limited.Secret), k.limited, ""},
		{"scoped route, scope held", "/reports/q1", bearer(k.full.Secret), k.full, `{"plan":"pro","seats":3}`},
	}
	for _, tc := range allowed {
		t.Run("allowed/"+tc.name, func(t *testing.T) {
			status, _, body := do(t, c, "GET", base+tc.path, tc.header, nil)
			if status != 200 || string(body) != "upstream ok" {
				t.Fatalf("got %d %q, want 200 from the app", status, body)
			}
			got := app.last(t)
			want := map[string]string{
				HeaderKeyID:      tc.key.ID,
				HeaderKeySubject: tc.key.Subject,
				HeaderKeyName:    tc.key.Name,
				HeaderKeyScopes:  strings.Join(tc.key.Scopes, " "),
			}
			if tc.claims != "" {
				want[HeaderKeyClaims] = tc.claims
			}
			// Exactly the key's identity headers: an empty X-Api-Key-Scopes
			// may come empty (Caddy 2.6) or not at all (Caddy 2.7 and later
			// copy no empty header).
			for name, vs := range got.Header {
				if !hasPrefixFold(name, "X-Api-Key-") {
					continue
				}
				if v, ok := want[name]; !ok || len(vs) != 1 || vs[0] != v {
					t.Errorf("app got %s = %q, want %q (present: %v)", name, vs, v, ok)
				}
				if strings.Contains(strings.Join(vs, ""), "{http.") {
					t.Errorf("app got a placeholder in %s: %q", name, vs)
				}
			}
			for name, v := range want {
				if _, ok := got.Header[name]; !ok && v != "" {
					t.Errorf("app got no %s, want %q", name, v)
				}
			}
			for _, name := range []string{"Authorization", "X-Api-Key"} {
				if v, ok := got.Header[name]; ok {
					t.Errorf("app got the credential header %s: %q", name, v)
				}
			}
			if got.Path != tc.path {
				t.Errorf("app got path %q", got.Path)
			}
		})
	}

	const (
		noError      = `Bearer realm="keygate"`
		invalidToken = `Bearer realm="keygate", error="invalid_token"`
	)
	denied := []struct {
		name, path string
		header     http.Header
		status     int
		challenge  string
	}{
		{"missing", "/orders/1", http.Header{"X-Api-Key-Subject": {"user_admin"}}, 401, noError},
		{"malformed", "/orders/1", bearer("ak_garbage"), 401, invalidToken},
		{"unknown", "/orders/1", bearer(k.deleted.Secret), 401, invalidToken},
		{"revoked", "/orders/1", bearer(k.revoked.Secret), 401, invalidToken},
		{"expired", "/orders/1", bearer(k.expired.Secret), 401, invalidToken},
		{"scoped route, scope lacking", "/reports/q1", bearer(k.limited.Secret), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read"`},
		{"scoped route, other case", "/REPORTS/q1", bearer(k.limited.Secret), 403,
			`Bearer realm="keygate", error="insufficient_scope", scope="reports:read"`},
	}
	for _, tc := range denied {
		t.Run("denied/"+tc.name, func(t *testing.T) {
			before := app.hits()
			status, h, body := do(t, c, "GET", base+tc.path, tc.header, nil)
			if status != tc.status {
				t.Fatalf("got %d %s, want %d", status, body, tc.status)
			}
			if got := h.Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tc.challenge)
			}
			if app.hits() != before {
				t.Error("a denied request reached the app")
			}
		})
	}

	t.Run("public route needs no key, spoofed identity dropped", func(t *testing.T) {
		status, _, body := do(t, c, "GET", base+"/public/docs", http.Header{"X-Api-Key-Subject": {"user_admin"}}, nil)
		if status != 200 {
			t.Fatalf("got %d %s", status, body)
		}
		for name := range app.last(t).Header {
			if hasPrefixFold(name, "X-Api-Key-") {
				t.Errorf("app got %s on the public route", name)
			}
		}
	})

	t.Run("redis down is 503 with Retry-After, never the app", func(t *testing.T) {
		fresh := e.create(t, keystore.CreateParams{Subject: "user_fresh"}) // never verified, so never cached
		proc.Stop()
		before := app.hits()
		status, h, body := do(t, c, "GET", base+"/orders/1", bearer(fresh.Secret), nil)
		if status != 503 || h.Get("Retry-After") != "1" {
			t.Fatalf("got %d (Retry-After %q) %s, want 503 with Retry-After 1", status, h.Get("Retry-After"), body)
		}
		if app.hits() != before {
			t.Error("the request reached the app while Redis was down")
		}
	})

	t.Run("keygate down is refused, never the app", func(t *testing.T) {
		keygate.Close()
		before := app.hits()
		status, _, body := do(t, c, "GET", base+"/orders/1", bearer(k.full.Secret), nil)
		if status < 500 {
			t.Fatalf("got %d %s, want a 5xx", status, body)
		}
		if app.hits() != before {
			t.Error("the request reached the app while keygate was down")
		}
	})
}

// TestCaddyRemovesSpoofedHeaders sends every identity and forwarding
// header, in every spelling, through the documented Caddyfile to a route
// that needs a key and to the public one: none of the client's values
// reaches the app, and the forwarding headers it gets are Caddy's.
func TestCaddyRemovesSpoofedHeaders(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	keygate := httptest.NewServer(forwardAuthMux(t, e, ForwardAuthOptions{}))
	t.Cleanup(keygate.Close)
	app := newUpstream(t)
	base := startCaddy(t, strings.TrimPrefix(keygate.URL, "http://"), strings.TrimPrefix(app.URL, "http://"))
	c := &http.Client{Timeout: 30 * time.Second}

	throughSpoofed(t, c, base, app, k.full.Secret, func(t *testing.T, verified bool, got http.Header) {
		if v := got.Values("X-Forwarded-For"); len(v) != 1 || v[0] != "127.0.0.1" {
			t.Errorf("the app got X-Forwarded-For %q, want Caddy's peer alone", v)
		}
		if verified && got.Get(HeaderKeySubject) != k.full.Subject {
			t.Errorf("the app got %s %q", HeaderKeySubject, got.Get(HeaderKeySubject))
		}
	})
}

// TestCaddyPathForms is TestNginxPathForms through the documented
// Caddyfile, whose /reports route needs reports:read and whose /public/
// route needs nothing.
func TestCaddyPathForms(t *testing.T) { proxyPathForms(t, "caddy", startCaddy) }
