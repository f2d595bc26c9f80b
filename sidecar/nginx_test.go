package sidecar

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testkit"
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
		addr := testkit.FreeAddr(t)
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
// identity to the app. Without keygate, nginx answers 503
// (@keygate_error).
func TestNginxAuthRequest(t *testing.T) {
	documentedProxy(t, startNginx, http.StatusServiceUnavailable)
}
