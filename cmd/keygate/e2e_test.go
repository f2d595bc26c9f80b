package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
)

// binary is the keygate binary that TestMain builds for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keygate-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "keygate")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building keygate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a keygate process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stdout *syncbuf.Buffer
	stderr *syncbuf.Buffer
	done   chan struct{}
}

// start runs keygate with args and env and waits until healthURL answers.
func start(t *testing.T, env []string, healthURL string, args ...string) *proc {
	t.Helper()
	p := &proc{stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(testkit.CleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(healthURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("keygate %v exited at start:\n%s%s", args, p.stdout, p.stderr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("keygate %v not healthy after 15s:\n%s", args, p.stderr)
		}
	}
}

// stop sends SIGTERM and returns the exit status.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("keygate did not stop within 30s of SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

// cli runs "keygate args…" and returns its exit status and output.
func cli(t *testing.T, env []string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(testkit.CleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

type createdKey struct {
	ID         string `json:"id"`
	Secret     string `json:"secret"`
	Revoked    bool   `json:"revoked"`
	LastUsedAt *int64 `json:"last_used_at"`
}

func mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	code, out, errOut := cli(t, env, "", args...)
	if code != 0 {
		t.Fatalf("keygate %v: exit %d\n%s%s", args, code, out, errOut)
	}
	return out
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return v
}

func forwardAuth(t *testing.T, base, secret string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/forward-auth?scopes=reports:read", nil)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestWalkthroughEmbedded runs the README's walk-through on the embedded
// store: serve, create a key, use it, revoke it, restart, and check that
// the restart kept every key, revocation and last-used time.
func TestWalkthroughEmbedded(t *testing.T) {
	dataDir := t.TempDir()
	addr := testkit.FreeAddr(t)
	base := "http://" + addr
	env := []string{"KEYGATE_DATA_DIR=" + dataDir, "KEYGATE_URL=" + base, "KEYGATE_LOG_LEVEL=debug"}
	serve := start(t, env, base+"/healthz", "serve", "--listen", addr)

	if !strings.Contains(serve.stdout.String(), "Generated an admin token") {
		t.Fatalf("serve did not print the generated admin token:\n%s", serve.stdout)
	}
	if !strings.Contains(serve.stdout.String(), "Web console: "+base+"/console (sign in with the admin token above)") {
		t.Fatalf("serve did not print the console's address:\n%s", serve.stdout)
	}
	// The mux's own redirect under /console carries the console's headers.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	redir, err := noFollow.Get(base + "/console//keys")
	if err != nil {
		t.Fatal(err)
	}
	redir.Body.Close()
	if redir.StatusCode/100 != 3 || redir.Header.Get("X-Frame-Options") != "DENY" || redir.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /console//keys: %d, X-Frame-Options %q, CSP %q", redir.StatusCode,
			redir.Header.Get("X-Frame-Options"), redir.Header.Get("Content-Security-Policy"))
	}
	fi, err := os.Stat(filepath.Join(dataDir, adminTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if !strings.Contains(serve.stderr.String(), "embedded store") {
		t.Errorf("no start-up warning about the embedded store:\n%s", serve.stderr)
	}
	token, _ := os.ReadFile(filepath.Join(dataDir, adminTokenFile))

	key := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "demo", "--subject", "user_1", "--scopes", "reports:read", "--json"))
	if !strings.HasPrefix(key.Secret, "ak_") {
		t.Fatalf("create printed no secret: %+v", key)
	}
	table := mustCLI(t, env, "keys", "list")
	if !strings.Contains(table, key.ID) || !strings.Contains(table, "1 of 1") {
		t.Fatalf("keys list:\n%s", table)
	}

	resp := forwardAuth(t, base, key.Secret)
	if resp.StatusCode != 200 || resp.Header.Get("X-Api-Key-Subject") != "user_1" {
		t.Fatalf("forward-auth with a live key: %d %v", resp.StatusCode, resp.Header)
	}
	if code, out, _ := cli(t, env, key.Secret+"\n", "keys", "verify", "-"); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("keys verify - : exit %d\n%s", code, out)
	}

	mustCLI(t, env, "keys", "revoke", key.ID, "--reason", "walk-through")
	if resp := forwardAuth(t, base, key.Secret); resp.StatusCode != 401 {
		t.Fatalf("forward-auth after revoke: %d, want 401", resp.StatusCode)
	}
	if code, _, _ := cli(t, env, "", "keys", "verify", key.Secret); code != exitRefused {
		t.Fatalf("keys verify of a revoked key: exit %d, want %d", code, exitRefused)
	}
	if code := serve.stop(t); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM, want 0:\n%s", code, serve.stderr)
	}
	logs := serve.stdout.String() + serve.stderr.String()

	serve = start(t, env, base+"/healthz", "serve", "--listen", addr)
	if strings.Contains(serve.stdout.String(), "Generated") {
		t.Fatal("a restart generated a new admin token")
	}
	if !strings.Contains(serve.stdout.String(), "Web console: "+base+"/console (sign in with the admin token in "+filepath.Join(dataDir, adminTokenFile)+")") {
		t.Fatalf("after a restart serve did not say where the console and its token are:\n%s", serve.stdout)
	}
	got := decode[createdKey](t, mustCLI(t, env, "keys", "get", key.ID, "--json"))
	if !got.Revoked || got.LastUsedAt == nil {
		t.Fatalf("after a restart the key reads %+v; want revoked with last_used_at", got)
	}
	serve.stop(t)
	logs += serve.stdout.String() + serve.stderr.String()

	// The token was printed once, at generation; the secret never.
	if strings.Contains(logs, key.Secret) || strings.Contains(logs, key.Secret[len(key.Secret)-49:]) {
		t.Fatal("serve's output contains the key's secret")
	}
	if strings.Count(logs, strings.TrimSpace(string(token))) != 1 {
		t.Fatal("the admin token appears in serve's output other than the one announcement")
	}
}

// TestWalkthroughRedisWithSidecar runs serve and a sidecar as separate
// processes on a real redis-server: a revoke through serve's CLI is refused
// by the sidecar as soon as the command returns.
func TestWalkthroughRedisWithSidecar(t *testing.T) {
	redis := redistest.Start(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s auth=%q", r.Header.Get("X-Api-Key-Subject"), r.Header.Get("Authorization"))
	}))
	defer upstream.Close()

	addr, proxyAddr, opsAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	base := "http://" + addr
	env := []string{"KEYGATE_REDIS_URL=redis://" + redis.Addr, "KEYGATE_ADMIN_TOKENS=admintok-of-thirty-two-characters-0", "KEYGATE_ADMIN_TOKEN=admintok-of-thirty-two-characters-0", "KEYGATE_URL=" + base}
	serve := start(t, env, base+"/readyz", "serve", "--listen", addr)
	side := start(t, env, "http://"+opsAddr+"/readyz", "sidecar", "--upstream", upstream.URL, "--listen", proxyAddr, "--ops-listen", opsAddr)

	key := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "svc", "--subject", "org_9", "--json"))
	call := func() (int, string) {
		req, _ := http.NewRequest("GET", "http://"+proxyAddr+"/anything", nil)
		req.Header.Set("Authorization", "Bearer "+key.Secret)
		req.Header.Set("X-Api-Key-Subject", "spoofed")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := call(); code != 200 || body != `hello org_9 auth=""` {
		t.Fatalf("through the sidecar: %d %q", code, body)
	}
	mustCLI(t, env, "keys", "revoke", key.ID)
	if code, _ := call(); code != 401 {
		t.Fatalf("sidecar after revoke returned: %d, want 401", code)
	}
	if code := side.stop(t); code != 0 {
		t.Fatalf("sidecar exited %d after SIGTERM", code)
	}
	if code := serve.stop(t); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM", code)
	}
	if code, _, _ := cli(t, append(env, "KEYGATE_URL=http://"+testkit.FreeAddr(t)), "", "keys", "list"); code != exitUnreachable {
		t.Fatalf("keys list against nothing: exit %d, want %d", code, exitUnreachable)
	}
}

// TestKeyLifecycleCLI drives roll, disable, enable, update, revoke-all and
// import from the command line against serve on a real redis-server, and
// checks each through a sidecar in another process that trusts loopback
// as a proxy.
func TestKeyLifecycleCLI(t *testing.T) {
	redis := redistest.Start(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("X-Api-Key-Id"))
	}))
	defer upstream.Close()
	addr, proxyAddr, opsAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	base := "http://" + addr
	env := []string{"KEYGATE_REDIS_URL=redis://" + redis.Addr, "KEYGATE_ADMIN_TOKENS=admintok-of-thirty-two-characters-0",
		"KEYGATE_ADMIN_TOKEN=admintok-of-thirty-two-characters-0", "KEYGATE_URL=" + base}
	start(t, env, base+"/readyz", "serve", "--listen", addr)
	start(t, env, "http://"+opsAddr+"/readyz", "sidecar", "--upstream", upstream.URL, "--listen", proxyAddr,
		"--ops-listen", opsAddr, "--trusted-proxies", "127.0.0.1")
	call := func(secret, xff string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+proxyAddr+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	expect := func(what, secret, xff string, status int, id string) {
		t.Helper()
		code, body := call(secret, xff)
		if code != status || (status == 200 && body != id) {
			t.Fatalf("%s: %d %q, want %d %q", what, code, body, status, id)
		}
	}

	old := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "svc", "--subject", "org_9", "--json"))
	rolled := decode[createdKey](t, mustCLI(t, env, "keys", "roll", old.ID, "--grace", "1h", "--json"))
	expect("the old key in its grace", old.Secret, "", 200, old.ID)
	expect("the new key", rolled.Secret, "", 200, rolled.ID)

	mustCLI(t, env, "keys", "disable", rolled.ID)
	expect("disabled", rolled.Secret, "", 401, "")
	if out := mustCLI(t, env, "keys", "get", rolled.ID); !strings.Contains(out, "disabled") {
		t.Errorf("keys get of a disabled key:\n%s", out)
	}
	mustCLI(t, env, "keys", "enable", rolled.ID)
	expect("enabled again", rolled.Secret, "", 200, rolled.ID)

	out := mustCLI(t, env, "keys", "update", rolled.ID, "--name", "svc 2", "--allowed-cidrs", "203.0.113.0/24")
	if !strings.Contains(out, "svc 2") || !strings.Contains(out, "203.0.113.0/24") {
		t.Fatalf("keys update:\n%s", out)
	}
	expect("from loopback itself", rolled.Secret, "", 403, "")
	expect("from an allowed client, through the trusted proxy", rolled.Secret, "203.0.113.5", 200, rolled.ID)
	expect("a spoofed allowed address left of the real client", rolled.Secret, "203.0.113.5, 198.51.100.1", 403, "")

	if out := mustCLI(t, env, "keys", "revoke-all", "--subject", "org_9", "--reason", "offboarding"); !strings.Contains(out, "revoked 2 keys of org_9") {
		t.Fatalf("keys revoke-all: %q", out)
	}
	expect("after revoke-all", rolled.Secret, "203.0.113.5", 401, "")
	expect("the old key after revoke-all", old.Secret, "", 401, "")

	const foreign = "legacy_live_9f8e7d6c5b4a39281716"
	sum := sha256.Sum256([]byte(foreign))
	file := filepath.Join(t.TempDir(), "keys.jsonl")
	lines := fmt.Sprintf(`{"name":"legacy","subject":"org_7","hash":{"algorithm":"sha256","value":"%x"}}`+"\n\n"+
		`{"name":"broken","subject":"org_7","hash":{"algorithm":"md5","value":"00"}}`+"\n", sum)
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := cli(t, env, "", "keys", "import", file)
	if code != exitRefused || !strings.Contains(stderr, "line 3:") || !strings.Contains(stderr, "imported 1 keys, 1 failed") {
		t.Fatalf("keys import: exit %d\n%s%s", code, stdout, stderr)
	}
	id, _, _ := strings.Cut(stdout, "\t")
	expect("the imported key through the sidecar", foreign, "", 200, id)
}
