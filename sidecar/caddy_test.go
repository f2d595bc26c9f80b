package sidecar

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// caddySnippet is the documented Caddyfile; the test runs it as it is,
// with a global options block in front (no admin endpoint, no automatic
// HTTPS: several Caddys may run on one machine; loopback only) and only
// these three strings replaced.
const (
	caddySnippet = "../deploy/forward-auth/Caddyfile"
	caddyKeygate = "127.0.0.1:8080"
	caddyApp     = "127.0.0.1:3000"
	caddyListen  = ":8000 {"
	caddyGlobal  = "{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\n\n"
	caddyInstall = "caddy not found on PATH: install it (Debian: apt-get install -y caddy) or run .ci/setup"
)

// startCaddy runs Debian's caddy with the documented Caddyfile pointed at
// keygate and app, and returns its base URL; caddy is stopped at cleanup.
func startCaddy(t *testing.T, keygate, app string) string {
	t.Helper()
	bin, err := exec.LookPath("caddy")
	if err != nil {
		t.Fatal(caddyInstall)
	}
	snippet := readDocumented(t, caddySnippet, []string{caddyListen}, []string{caddyKeygate, caddyApp})
	dir := t.TempDir()
	return startOnFreePort(t, "caddy", func(addr string) error {
		_, port, _ := net.SplitHostPort(addr)
		conf := caddyGlobal + strings.NewReplacer(caddyKeygate, keygate, caddyApp, app, caddyListen, "http://:"+port+" {").Replace(snippet)
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
		// Caddy keeps state under $HOME and the XDG directories: a
		// directory of the test's own.
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		return runProxy(t, "caddy", cmd, addr, nil)
	})
}

// TestCaddyForwardAuth runs the documented Caddyfile
// (deploy/forward-auth/Caddyfile) in Debian's caddy, with forward_auth
// asking keygate's forward-auth endpoint. Without keygate, Caddy answers
// 502.
func TestCaddyForwardAuth(t *testing.T) { documentedProxy(t, startCaddy, http.StatusBadGateway) }

// TestCaddyRemovesSpoofedHeaders: the documented Caddyfile lets none of
// a client's identity and forwarding headers through.
func TestCaddyRemovesSpoofedHeaders(t *testing.T) { proxyRemovesSpoofed(t, startCaddy) }

// TestCaddyPathForms is TestNginxPathForms through the documented
// Caddyfile, whose /reports route needs reports:read and whose /public/
// route needs nothing.
func TestCaddyPathForms(t *testing.T) { proxyPathForms(t, "caddy", startCaddy) }
