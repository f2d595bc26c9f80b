package deploy

import (
	"context"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/syncbuf"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore/apikey"
	"github.com/keygate/keygate/keystore/client"
)

// unreachableRedis is a loopback port nothing listens on: the binary starts,
// and its store is down.
const unreachableRedis = "127.0.0.1:1"

// proc is a keygate process started from an invocation.
type proc struct {
	inv    *invocation
	listen string            // the address it serves on (loopback, free port)
	addrs  map[string]string // by listen flag: listen, and the sidecar's ops-listen
	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	done   chan struct{}
}

// start runs the invocation exactly as configured (its flags and its
// environment), except for what must differ on a test machine: the Redis
// URL's address becomes redisAddr, the listen addresses become free loopback
// ports (given as flags, which win over the environment), and extra flags
// are appended.
func start(t *testing.T, inv *invocation, redisAddr string, extra ...string) *proc {
	t.Helper()
	p := &proc{inv: inv, listen: testkit.FreeAddr(t), out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.addrs = map[string]string{"listen": p.listen}
	if inv.cmd == "sidecar" {
		p.addrs["ops-listen"] = testkit.FreeAddr(t)
	}
	env := testkit.CleanEnv()
	for k, v := range inv.env {
		if k == "KEYGATE_REDIS_URL" {
			u, err := url.Parse(v)
			if err != nil {
				t.Fatalf("%s: KEYGATE_REDIS_URL %q: %v", inv.where, v, err)
			}
			u.Host = redisAddr
			v = u.String()
		}
		env = append(env, k+"="+v)
	}
	args := append([]string{inv.cmd}, inv.args...)
	for flag, addr := range p.addrs {
		args = append(args, "--"+flag, addr)
	}
	args = append(args, extra...)
	p.cmd = exec.Command(keygate, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done }) // an error once it has exited
	health := "http://" + p.addrs[inv.healthFlag()] + "/healthz"
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(health); err == nil && resp.Body.Close() == nil && resp.StatusCode == http.StatusOK {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s: keygate %s exited at start (status %d):\n%s", inv.where, strings.Join(args, " "), p.cmd.ProcessState.ExitCode(), p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not answer 200 within 20s:\n%s", inv.where, health, p.out)
		}
	}
}

// addrOfPort maps a port of the configuration (a probe's, a Service's) to
// the test address of the listener the configuration gives that port ("":
// none).
func (p *proc) addrOfPort(port int) string {
	for flag, addr := range p.addrs {
		if p.inv.port(flag) == port {
			return addr
		}
	}
	return ""
}

// stop sends SIGTERM, as Docker, the kubelet and systemd do, and checks the
// process drains and exits 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no exit within 30s of SIGTERM", p.inv.where)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s: exit status %d after SIGTERM, want 0:\n%s", p.inv.where, code, p.out)
	}
}

// probe is a health check a configuration points at a keygate process.
type probe struct {
	where string // for messages
	kind  string // "liveness", "readiness" or "metrics"
	path  string
	port  int
}

// healthProbes are liveness, readiness and metrics on the listener where
// keygate serves them, for a configuration that names no probe of its own.
func healthProbes(inv *invocation) []probe {
	var out []probe
	for kind, path := range map[string]string{"liveness": "/healthz", "readiness": "/readyz", "metrics": "/metrics"} {
		out = append(out, probe{inv.where, kind, path, inv.port(inv.healthFlag())})
	}
	return out
}

// checkProbes starts inv with its store down and asks every probe: liveness
// must answer 200 (a Redis outage must not restart keygate), readiness 503
// (the path really checks the store), metrics 200 with keygate's metrics.
func checkProbes(t *testing.T, inv *invocation, probes []probe) {
	t.Helper()
	p := start(t, inv, unreachableRedis)
	for _, pr := range probes {
		addr := p.addrOfPort(pr.port)
		if addr == "" {
			t.Errorf("%s: %s port %d is none of keygate %s's listeners", pr.where, pr.kind, pr.port, inv.cmd)
			continue
		}
		want := map[string]int{"liveness": http.StatusOK, "readiness": http.StatusServiceUnavailable, "metrics": http.StatusOK}[pr.kind]
		if status, _, body := testkit.Do(t, nil, "GET", "http://"+addr+pr.path, nil, nil); status != want || pr.kind == "metrics" && !strings.Contains(string(body), "keygate_") {
			t.Errorf("%s: %s %s answers %d with Redis down, want %d (%s)", pr.where, pr.kind, pr.path, status, want, map[string]string{
				"liveness":  "a Redis outage would restart every instance",
				"readiness": "the instance must leave the rotation",
				"metrics":   "with keygate_ metrics",
			}[pr.kind])
		}
	}
	p.stop(t)
}

// adminClient is keygate's Go client for serve's admin API, with the first
// configured admin token.
func adminClient(t *testing.T, serve *proc) *client.Client {
	t.Helper()
	c, err := client.New("http://"+serve.listen, strings.Split(serve.inv.value("admin-tokens"), ",")[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func createKey(t *testing.T, admin *client.Client, p apikey.CreateParams) *apikey.APIKey {
	t.Helper()
	k, err := admin.Create(context.Background(), p)
	if err != nil {
		t.Fatalf("POST /api_keys with the configured admin token: %v", err)
	}
	return k
}

// session is deploy/README.md's curl session, run against a serve and a
// sidecar configured as a deployment file configures them, on one test
// redis-server: create a key through the admin API, call the upstream
// through the sidecar without and with it, revoke it, and see 401; the
// sidecar's --public paths answer without a key. It proves that the two agree on Redis, namespace, key prefix and hash key,
// and that the configured admin token works.
func session(t *testing.T, serveInv, sidecarInv *invocation) (serve, sidecar *proc) {
	t.Helper()
	redisAddr := redistest.Start(t).Addr
	up := testkit.NewUpstream(t, nil)
	serve = start(t, serveInv, redisAddr)
	sidecar = start(t, sidecarInv, redisAddr, "--upstream", up.URL)
	for _, p := range []*proc{serve, sidecar} {
		if status, _, body := testkit.Do(t, nil, "GET", "http://"+p.addrs[p.inv.healthFlag()]+"/readyz", nil, nil); status != http.StatusOK {
			t.Fatalf("%s: /readyz with Redis up: %d %s", p.inv.where, status, body)
		}
	}
	admin := adminClient(t, serve)
	key := createKey(t, admin, apikey.CreateParams{Name: "deploy test", Subject: "user_42"})

	proxy := "http://" + sidecar.listen + "/"
	if status, _, _ := testkit.Do(t, nil, "GET", proxy, nil, nil); status != http.StatusUnauthorized {
		t.Errorf("through the sidecar without a key: %d, want 401", status)
	}
	if status, _, body := testkit.Do(t, nil, "GET", proxy, testkit.Bearer(key.Secret), nil); status != http.StatusOK {
		t.Fatalf("through %s with the key serve created: %d %s, want 200 (do serve and sidecar share Redis, namespace and hash key?)", sidecarInv.where, status, body)
	}
	h := up.Last(t).Header
	if h.Get("X-Api-Key-Id") != key.ID || h.Get("X-Api-Key-Subject") != "user_42" {
		t.Errorf("the app got identity %q %q, want %q user_42", h.Get("X-Api-Key-Id"), h.Get("X-Api-Key-Subject"), key.ID)
	}
	if h.Get("Authorization") != "" {
		t.Error("the app got the client's Authorization header")
	}
	if _, err := admin.Revoke(context.Background(), key.ID, new("deploy test")); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if status, _, _ := testkit.Do(t, nil, "GET", proxy, testkit.Bearer(key.Secret), nil); status != http.StatusUnauthorized {
		t.Errorf("through the sidecar with the revoked key: %d, want 401", status)
	}
	for _, prefix := range strings.Split(sidecarInv.value("public"), ";") { // reach the app without a key
		if prefix = strings.TrimSpace(prefix); prefix != "" {
			if status, _, _ := testkit.Do(t, nil, "GET", "http://"+sidecar.listen+prefix, nil, nil); status != http.StatusOK {
				t.Errorf("%s: public path %s without a key: %d, want 200", sidecarInv.where, prefix, status)
			}
		}
	}
	return serve, sidecar
}

// mustOne returns the only invocation of a command in invs.
func mustOne(t *testing.T, invs []*invocation, cmd string) *invocation {
	t.Helper()
	found := slices.DeleteFunc(slices.Clone(invs), func(inv *invocation) bool { return inv.cmd != cmd })
	if len(found) != 1 {
		t.Fatalf("want one keygate %s, found %d", cmd, len(found))
	}
	return found[0]
}
