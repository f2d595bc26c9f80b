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
		addr := testkit.FreeAddr(t)
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
