package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
)

// env is what the measures share: the configuration and one redis-server,
// flushed before each measure.
type env struct {
	cfg       config
	redisAddr string
	redis     *exec.Cmd
	exited    chan struct{}
	dir       string
	machine   string
}

func newEnv(c config) (*env, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not on PATH (Debian: apt-get install -y redis-server)")
	}
	dir, err := os.MkdirTemp("", "keygate-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{cfg: c, dir: dir}
	if err := e.startRedis(bin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e.machine = machine(version(bin, "--version"), version(nginxBinary(), "-v"))
	return e, nil
}

// startRedis starts redis-server on a free loopback port, without
// persistence, and waits until it answers.
func (e *env) startRedis(bin string) error {
	port, err := testkit.FreePort()
	if err != nil {
		return err
	}
	e.redisAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	e.redis = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", e.dir, "--daemonize", "no",
		"--logfile", filepath.Join(e.dir, "redis.log"))
	if err := e.redis.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	e.exited = make(chan struct{})
	go func() { e.redis.Wait(); close(e.exited) }()
	rdb := redis.NewClient(&redis.Options{Addr: e.redisAddr, MaxRetries: -1})
	defer rdb.Close()
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err = rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-e.exited:
			return errors.New("redis-server exited at start; see its log in " + e.dir)
		case <-time.After(25 * time.Millisecond):
		}
	}
	e.close()
	return fmt.Errorf("redis-server did not answer PING within 5s: %w", err)
}

func (e *env) close() {
	if e.redis != nil && e.redis.Process != nil {
		e.redis.Process.Kill()
		<-e.exited
	}
	os.RemoveAll(e.dir)
}

// client returns a new client of the run's redis-server with a pool of
// poolSize connections (go-redis's default when 0).
func (e *env) client(poolSize int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: e.redisAddr, PoolSize: poolSize})
}

// fresh empties Redis, so that a measure sees nothing of the previous one.
func (e *env) fresh(ctx context.Context) error {
	rdb := e.client(1)
	defer rdb.Close()
	return rdb.FlushAll(ctx).Err()
}

// instance is one keygate process's worth of keystore: a client, a store
// and a verifier, closed together.
type instance struct {
	rdb   *redis.Client
	store *keystore.Store
	v     *keystore.Verifier
}

// instance starts an instance on a client of the run's redis-server with
// a pool of poolSize connections (go-redis's default when 0).
func (e *env) instance(ctx context.Context, sopts keystore.Options, vopts keystore.VerifierOptions, poolSize int) (*instance, error) {
	return instanceOn(ctx, e.client(poolSize), sopts, vopts)
}

// instanceOn starts an instance on rdb, which it closes with the instance
// (at once on an error), and waits until a verifier with a cache serves
// from it.
func instanceOn(ctx context.Context, rdb *redis.Client, sopts keystore.Options, vopts keystore.VerifierOptions) (*instance, error) {
	in := &instance{rdb: rdb}
	var err error
	if in.store, err = keystore.New(in.rdb, sopts); err != nil {
		in.rdb.Close()
		return nil, err
	}
	if in.v, err = keystore.NewVerifier(in.store, vopts); err != nil {
		in.store.Close()
		in.rdb.Close()
		return nil, err
	}
	if vopts.CacheTTL >= 0 {
		if err := waitReady(ctx, in.v); err != nil {
			in.close()
			return nil, err
		}
	}
	return in, nil
}

// keyed is a fresh store, one instance on it with vopts (ready to serve
// from its cache) and one key; close the instance when done.
func (e *env) keyed(ctx context.Context, vopts keystore.VerifierOptions) (*instance, *keystore.APIKey, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, nil, err
	}
	in, err := e.instance(ctx, keystore.Options{}, vopts, 0)
	if err != nil {
		return nil, nil, err
	}
	k, err := in.store.Create(ctx, keyParams(0, subjectOf(0)))
	if err != nil {
		in.close()
		return nil, nil, err
	}
	return in, k, nil
}

// adminStore is a store on a client of its own, as the process that
// serves the admin API has; the returned func closes both.
func (e *env) adminStore() (*keystore.Store, func(), error) {
	rdb := e.client(0)
	store, err := keystore.New(rdb, keystore.Options{})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return store, func() { store.Close(); rdb.Close() }, nil
}

func (in *instance) close() {
	in.v.Close()
	in.store.Close()
	in.rdb.Close()
}

// waitReady waits, at most 10s, until the verifier's invalidation
// subscription is live, so that it serves from its cache.
func waitReady(ctx context.Context, v *keystore.Verifier) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := v.Ready(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("verifier not ready after 10s: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// createKeys creates n keys of the typical shape (see keyParams) under
// subject, from conc goroutines, and returns them with their secrets.
func createKeys(ctx context.Context, s *keystore.Store, n, conc int, subject func(i int) string) ([]*keystore.APIKey, error) {
	keys := make([]*keystore.APIKey, n)
	errs := make(chan error, conc)
	next := make(chan int)
	for w := 0; w < conc; w++ {
		go func() {
			for i := range next {
				k, err := s.Create(ctx, keyParams(i, subject(i)))
				if err != nil {
					errs <- err
					for range next {
					}
					return
				}
				keys[i] = k
			}
			errs <- nil
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	var first error
	for w := 0; w < conc; w++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return keys, first
}

// keyParams is the typical key of these measures: a name, a Clerk-style
// subject and creator, two scopes and a small claims object; no
// description, no expiry.
func keyParams(i int, subject string) keystore.CreateParams {
	creator := "user_2xUq8ZtRk9vLbN3mWc4eYh7TpQs"
	return keystore.CreateParams{
		Name:      fmt.Sprintf("deploy key %06d", i),
		Subject:   subject,
		Scopes:    []string{"reports:read", "reports:write"},
		Claims:    []byte(`{"plan":"pro"}`),
		CreatedBy: &creator,
	}
}

// subjectOf returns a Clerk-style user ID for the number i.
func subjectOf(i int) string { return fmt.Sprintf("user_2xUq8ZtRk9vLbN3mWc4e%07d", i) }

// version returns the first line a tool prints about its version.
func version(bin string, flag string) string {
	if bin == "" {
		return "not installed"
	}
	out, _ := exec.Command(bin, flag).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	// "Redis server v=7.0.15 sha=…" and "nginx version: nginx/1.22.1".
	if f := strings.Fields(line); len(f) >= 3 && f[0] == "Redis" {
		return "redis " + strings.TrimPrefix(f[2], "v=")
	}
	if _, v, ok := strings.Cut(line, "nginx/"); ok {
		return "nginx " + v
	}
	return line
}

// nginxBinary returns nginx's path, or "" when it is not installed.
func nginxBinary() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}
