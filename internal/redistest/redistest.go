// Package redistest starts real redis-server processes on free loopback
// ports for integration tests, and miniredis for fast unit tests.
//
//	rdb := redistest.Server(t) // a real redis-server, stopped at cleanup
//	mr, rdb := redistest.Mini(t)
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/testkit"
)

// InstallHint tells how to get redis-server when it is missing.
const InstallHint = "redis-server not found on PATH: install it (Debian: apt-get install -y redis-server) or run make test, which installs it"

// Mini returns a miniredis server and a client on it, both closed at cleanup.
func Mini(t testing.TB) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(ClientOptions(mr.Addr()))
	t.Cleanup(func() { rdb.Close() })
	return mr, rdb
}

// ClientOptions are the options of the clients this package returns: one
// retry and one dial retry, so that tests of an unreachable Redis fail fast.
func ClientOptions(addr string) *redis.Options {
	return &redis.Options{Addr: addr, MaxRetries: 1, DialerRetries: 1, DialTimeout: time.Second}
}

// Proc is a redis-server process started by [Start].
type Proc struct {
	Addr   string
	Dir    string
	cmd    *exec.Cmd
	args   []string
	exited chan error
}

// Server starts a redis-server on a free loopback port and returns a client
// on it; both are stopped at cleanup. It fails the test, with an install
// hint, when redis-server is missing: integration tests never skip silently.
func Server(t testing.TB, extraArgs ...string) *redis.Client {
	t.Helper()
	p := Start(t, extraArgs...)
	rdb := redis.NewClient(ClientOptions(p.Addr))
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Start starts a redis-server on a free loopback port, stopped at cleanup.
func Start(t testing.TB, extraArgs ...string) *Proc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(InstallHint)
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := testkit.FreePort()
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		p := &Proc{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir}
		p.args = append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"),
		}, extraArgs...)
		if lastErr = p.start(bin); lastErr == nil {
			t.Cleanup(p.Stop)
			return p
		}
	}
	t.Fatalf("starting redis-server: %v", lastErr)
	return nil
}

func (p *Proc) start(bin string) error {
	p.cmd = exec.Command(bin, p.args...)
	if err := p.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	p.exited = exited
	go func() { exited <- p.cmd.Wait(); close(exited) }()
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.After(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(p.Dir, "redis.log"))
			return fmt.Errorf("redis-server exited (%v): %s", err, lastLines(string(log), 3))
		case <-deadline:
			p.cmd.Process.Kill()
			return errors.New("redis-server did not answer PING within 10s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop kills the server (SIGKILL, as a crash would) and waits for it to
// exit. It is safe to call twice.
func (p *Proc) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Restart starts the server again on the same port and directory.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	bin, _ := exec.LookPath("redis-server")
	if err := p.start(bin); err != nil {
		t.Fatalf("restarting redis-server: %v", err)
	}
}

func lastLines(s string, n int) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
