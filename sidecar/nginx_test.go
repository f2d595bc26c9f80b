package sidecar

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	snippet := readDocumented(t, nginxSnippet, []string{snippetKeygate, snippetApp, snippetListen}, nil)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), fmt.Appendf(nil, nginxMainConfFmt, dir), 0o644); err != nil {
		t.Fatal(err)
	}
	errorLog := filepath.Join(dir, "error.log")
	return startOnFreePort(t, "nginx", func(addr string) error {
		conf := strings.NewReplacer(snippetKeygate, keygate, snippetApp, app, snippetListen, "listen "+addr+";").Replace(snippet)
		if err := os.WriteFile(filepath.Join(dir, "keygate.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir+"/", "-c", filepath.Join(dir, "nginx.conf"), "-e", errorLog)
		return runProxy(t, "nginx", cmd, addr, func() string {
			log, _ := os.ReadFile(errorLog)
			return string(log)
		})
	})
}

// TestNginxAuthRequest runs the documented nginx configuration
// (deploy/forward-auth/nginx.conf) in a real nginx, with auth_request
// asking keygate's forward-auth endpoint and auth_request_set copying the
// identity to the app. Without keygate, nginx answers 503
// (@keygate_error).
func TestNginxAuthRequest(t *testing.T) {
	documentedProxy(t, startNginx, http.StatusServiceUnavailable)
}
