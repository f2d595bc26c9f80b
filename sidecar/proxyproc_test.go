package sidecar

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testkit"
)

// readDocumented reads a proxy's documented configuration, which the test
// runs as it is but for a few strings it replaces: each of once must be
// there exactly once, each of some at least once, or the test and the
// documented configuration have drifted.
func readDocumented(t *testing.T, path string, once, some []string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the documented config: %v", err)
	}
	conf := string(b)
	for _, s := range once {
		if n := strings.Count(conf, s); n != 1 {
			t.Fatalf("%s holds %q %d times, want once: the test and the documented config have drifted", path, s, n)
		}
	}
	for _, s := range some {
		if !strings.Contains(conf, s) {
			t.Fatalf("%s does not hold %q: the test and the documented config have drifted", path, s)
		}
	}
	return conf
}

// startOnFreePort starts a proxy on a free loopback port and returns its
// base URL: run writes the proxy's configuration for addr and starts it
// with [runProxy]. Another process may take the port between the pick and
// the proxy's bind, so it tries five ports.
func startOnFreePort(t *testing.T, name string, run func(addr string) error) string {
	t.Helper()
	var lastErr error
	for range 5 {
		addr := testkit.FreeAddr(t)
		if lastErr = run(addr); lastErr == nil {
			return "http://" + addr
		}
	}
	t.Fatalf("starting %s: %v", name, lastErr)
	return ""
}

// runProxy starts cmd, a proxy that listens on addr, and waits at most 10
// seconds for addr to accept a connection. The proxy is killed at cleanup;
// when the test failed, the last lines of its output and of extraLog (a
// log file it writes, or nil) go to the test's log.
func runProxy(t *testing.T, name string, cmd *exec.Cmd, addr string, extraLog func() string) error {
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	logs := func(n int) string { // once cmd has exited
		s := out.String()
		if extraLog != nil {
			s += extraLog()
		}
		return lastLines(s, n)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
				if t.Failed() {
					t.Logf("%s's log:\n%s", name, logs(30))
				}
			})
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited (%v): %s", name, err, logs(10))
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			return errors.New(name + " did not accept connections within 10s")
		case <-time.After(20 * time.Millisecond):
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
