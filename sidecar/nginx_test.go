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

// nginxInstallHint tells how to get nginx when it is missing.
const nginxInstallHint = "nginx not found on PATH or in /usr/sbin: install it (Debian: apt-get install -y nginx-light) or run .ci/run"

// nginxSnippet is the documented configuration; the test runs it as it is,
// replacing only these three strings.
const (
	nginxSnippet     = "../deploy/forward-auth/nginx.conf"
	snippetKeygate   = "127.0.0.1:8080"
	snippetApp       = "127.0.0.1:3000"
	snippetListen    = "listen 8000;"
	nginxMainConfFmt = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 128; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    include %[1]s/keygate.conf;
}
`
)

func nginxBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	t.Fatal(nginxInstallHint)
	return ""
}

// startNginx runs nginx, in the foreground as one process, with the
// documented snippet pointed at keygate and app. It returns nginx's base
// URL; nginx is stopped at cleanup.
func startNginx(t *testing.T, keygate, app string) string {
	t.Helper()
	bin := nginxBinary(t)
	snippet, err := os.ReadFile(nginxSnippet)
	if err != nil {
		t.Fatalf("reading the documented nginx config: %v", err)
	}
	for _, s := range []string{snippetKeygate, snippetApp, snippetListen} {
		if n := strings.Count(string(snippet), s); n != 1 {
			t.Fatalf("%s holds %q %d times, want once: the test and the documented config have drifted", nginxSnippet, s, n)
		}
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), fmt.Appendf(nil, nginxMainConfFmt, dir), 0o644); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr := closedAddr(t)
		conf := strings.NewReplacer(snippetKeygate, keygate, snippetApp, app, snippetListen, "listen "+addr+";").Replace(string(snippet))
		if err := os.WriteFile(filepath.Join(dir, "keygate.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if lastErr = runNginx(t, bin, dir, addr); lastErr == nil {
			return "http://" + addr
		}
	}
	t.Fatalf("starting nginx: %v", lastErr)
	return ""
}

func runNginx(t *testing.T, bin, dir, addr string) error {
	cmd := exec.Command(bin, "-p", dir+"/", "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
				if t.Failed() {
					log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
					t.Logf("nginx error.log:\n%s", lastLines(string(log), 30))
				}
			})
			return nil
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return fmt.Errorf("nginx exited (%v): %s %s", err, out.String(), lastLines(string(log), 5))
		case <-time.After(20 * time.Millisecond):
		}
		if i == 500 {
			cmd.Process.Kill()
			<-exited
			return errors.New("nginx did not accept connections within 10s")
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestNginxAuthRequest runs the documented nginx configuration
// (deploy/forward-auth/nginx.conf) in a real nginx, with auth_request
// asking keygate's forward-auth endpoint and auth_request_set copying the
// identity to the app.
func TestNginxAuthRequest(t *testing.T) {
	proc := redistest.Start(t)
	rdb := redis.NewClient(redistest.ClientOptions(proc.Addr))
	t.Cleanup(func() { rdb.Close() })
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	keygate := httptest.NewServer(forwardAuthMux(t, e, ForwardAuthOptions{}))
	t.Cleanup(keygate.Close)
	app := newUpstream(t)
	base := startNginx(t, strings.TrimPrefix(keygate.URL, "http://"), strings.TrimPrefix(app.URL, "http://"))
	c := &http.Client{Timeout: 30 * time.Second}

	spoofed := http.Header{"X-Api-Key-Subject": {"user_admin"}, "X-Api-Key-Claims": {`{"role":"admin"}`}}
	allowed := []struct {
		name, path string
		header     http.Header
		key        *keystore.APIKey
		claims     string // "" when the app must get no claims header
	}{
		{"valid key, spoofed identity replaced", "/orders/1", with(bearer(k.full.Secret), "X-Api-Key-Subject", "user_admin", "X-Api-Key-Claims", `{"role":"admin"}`), k.full, `{"plan":"pro","seats":3}`},
		{"key without claims, spoofed claims dropped", "/orders/1", with(http.Header{"X-Api-Key": {k.limited.Secret}}, "X-Api-Key-Claims", `{"role":"admin"}`), k.limited, ""},
		{"scoped location, scope held", "/reports/q1", bearer(k.full.Secret), k.full, `{"plan":"pro","seats":3}`},
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
			for name, v := range want {
				if v == "" {
					continue // nginx sends no header for an empty value
				}
				if vs := got.Header.Values(name); len(vs) != 1 || vs[0] != v {
					t.Errorf("app got %s = %q, want %q", name, vs, v)
				}
			}
			for _, name := range []string{"Authorization", "X-Api-Key"} {
				if v, ok := got.Header[name]; ok {
					t.Errorf("app got the credential header %s: %q", name, v)
				}
			}
			if tc.claims == "" {
				if v, ok := got.Header[HeaderKeyClaims]; ok {
					t.Errorf("app got %s %q for a key without claims", HeaderKeyClaims, v)
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
		{"missing", "/orders/1", spoofed, 401, noError},
		{"malformed", "/orders/1", bearer("ak_garbage"), 401, invalidToken},
		{"unknown", "/orders/1", bearer(k.deleted.Secret), 401, invalidToken},
		{"revoked", "/orders/1", bearer(k.revoked.Secret), 401, invalidToken},
		{"expired", "/orders/1", bearer(k.expired.Secret), 401, invalidToken},
		{"scoped location, scope lacking", "/reports/q1", bearer(k.limited.Secret), 403,
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

	t.Run("public location needs no key, spoofed identity dropped", func(t *testing.T) {
		status, _, body := do(t, c, "GET", base+"/public/docs", spoofed, nil)
		if status != 200 {
			t.Fatalf("got %d %s", status, body)
		}
		for name := range app.last(t).Header {
			if hasPrefixFold(name, "X-Api-Key-") {
				t.Errorf("app got %s on the public location", name)
			}
		}
	})

	t.Run("the app's own 500 passes through untouched", func(t *testing.T) {
		status, _, body := do(t, c, "GET", base+"/boom", bearer(k.full.Secret), nil)
		if status != 500 || string(body) != "the app failed\n" {
			t.Fatalf("got %d %q, want the app's 500", status, body)
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

	t.Run("keygate down is 503, never the app", func(t *testing.T) {
		keygate.Close()
		before := app.hits()
		status, _, body := do(t, c, "GET", base+"/orders/1", bearer(k.full.Secret), nil)
		if status != 503 {
			t.Fatalf("got %d %s, want 503", status, body)
		}
		if app.hits() != before {
			t.Error("the request reached the app while keygate was down")
		}
	})
}
