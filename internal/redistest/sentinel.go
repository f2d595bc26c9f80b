package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/testkit"
)

// SentinelDownAfter is the down-after-milliseconds of the Sentinels that
// [StartSentinel] starts: a killed master is failed over a few seconds
// after it.
const SentinelDownAfter = time.Second

// Sentinel is a master, its replica and three Sentinels (quorum 2) on
// loopback, started by [StartSentinel].
type Sentinel struct {
	// MasterName is the name the Sentinels monitor the master under.
	MasterName string
	// Master and Replica are the servers as they started; after a failover
	// the roles are swapped: ask [Sentinel.MasterAddr].
	Master, Replica *Proc
	// Sentinels are the three redis-server --sentinel processes.
	Sentinels []*Proc
}

// StartSentinel starts a master, a replica of it and three Sentinels
// monitoring it with quorum 2, down-after-milliseconds [SentinelDownAfter]
// and a short failover-timeout, and waits until the replica is in sync and
// every Sentinel knows the replica and the two other Sentinels. Everything
// is killed at cleanup. extraArgs are passed to both data servers. It fails
// the test, with an install hint, when redis-server is missing.
func StartSentinel(t testing.TB, extraArgs ...string) *Sentinel {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(InstallHint)
	}
	s := &Sentinel{MasterName: "keygate"}
	// Replicas sync at once, not after the default 5s wait for others.
	extraArgs = append([]string{"--repl-diskless-sync-delay", "0"}, extraArgs...)
	s.Master = Start(t, extraArgs...)
	host, port, _ := net.SplitHostPort(s.Master.Addr)
	s.Replica = Start(t, append([]string{"--replicaof", host, port}, extraArgs...)...)
	for range 3 {
		s.Sentinels = append(s.Sentinels, startSentinel(t, bin, s.MasterName, s.Master.Addr))
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := poll(ctx, s.settled); err != nil {
		t.Fatalf("waiting for the Sentinels: %v", err)
	}
	return s
}

func startSentinel(t testing.TB, bin, name, master string) *Proc {
	t.Helper()
	dir := t.TempDir()
	host, mport, _ := net.SplitHostPort(master)
	var lastErr error
	for range 5 {
		port, err := testkit.FreePort()
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf(`port %d
bind 127.0.0.1
daemonize no
dir %s
logfile %s
sentinel monitor %s %s %s 2
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 3000
sentinel parallel-syncs %s 1
`, port, dir, filepath.Join(dir, "sentinel.log"), name, host, mport,
			name, SentinelDownAfter.Milliseconds(), name, name)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatalf("writing %s: %v", conf, err)
		}
		p := &Proc{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir}
		p.args = []string{conf, "--sentinel"}
		if lastErr = p.start(bin); lastErr == nil {
			t.Cleanup(p.Stop)
			return p
		}
	}
	t.Fatalf("starting redis-server --sentinel: %v", lastErr)
	return nil
}

// SentinelAddrs are the addresses of the Sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, p := range s.Sentinels {
		addrs[i] = p.Addr
	}
	return addrs
}

// FailoverOptions are the options of the clients [Sentinel.NewClient]
// returns: those keygate uses (one retry, 1s timeouts).
func (s *Sentinel) FailoverOptions(sentinelAddrs ...string) *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName: s.MasterName, SentinelAddrs: sentinelAddrs, MaxRetries: 1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
	}
}

// NewClient returns a Sentinel-backed client (redis.NewFailoverClient)
// that asks the given Sentinels, in that order (every Sentinel when none is
// given), closed at cleanup.
func (s *Sentinel) NewClient(t testing.TB, sentinelAddrs ...string) *redis.Client {
	t.Helper()
	if len(sentinelAddrs) == 0 {
		sentinelAddrs = s.SentinelAddrs()
	}
	rdb := redis.NewFailoverClient(s.FailoverOptions(sentinelAddrs...))
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// MasterAddr returns the master's address as every running Sentinel names
// it, or an error when they do not agree.
func (s *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var addr string
	for _, p := range s.Sentinels {
		if !p.Running() {
			continue
		}
		got, err := p.do(ctx, "sentinel", "get-master-addr-by-name", s.MasterName).StringSlice()
		if err != nil || len(got) != 2 {
			return "", fmt.Errorf("asking the Sentinel %s for the master: %v %v", p.Addr, got, err)
		}
		a := net.JoinHostPort(got[0], got[1])
		if addr != "" && a != addr {
			return "", fmt.Errorf("the Sentinels disagree: %s or %s", addr, a)
		}
		addr = a
	}
	if addr == "" {
		return "", fmt.Errorf("no Sentinel is running")
	}
	return addr, nil
}

// WaitFailover waits, a bounded time, until every Sentinel names a master
// other than dead, and that server says it is a master; it returns it.
func (s *Sentinel) WaitFailover(t testing.TB, dead *Proc) *Proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var promoted *Proc
	err := poll(ctx, func(ctx context.Context) error {
		addr, err := s.MasterAddr(ctx)
		if err != nil {
			return err
		}
		if addr == dead.Addr {
			return fmt.Errorf("the Sentinels still name %s", addr)
		}
		promoted = nil
		for _, p := range []*Proc{s.Master, s.Replica} {
			if p.Addr == addr {
				promoted = p
			}
		}
		if promoted == nil {
			return fmt.Errorf("the Sentinels name an unknown master %s", addr)
		}
		role, err := promoted.do(ctx, "role").Slice()
		if err != nil || len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s is not a master yet: %v %v", addr, role, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for the failover of %s: %v", dead.Addr, err)
	}
	return promoted
}

// WaitRejoined waits, a bounded time, until p, a former master restarted,
// has been turned by the Sentinels into a replica in sync. Sentinels wait
// 8s after such a server comes back before they convert it.
func (s *Sentinel) WaitRejoined(t testing.TB, p *Proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*readyTimeout)
	defer cancel()
	err := poll(ctx, func(ctx context.Context) error {
		role, err := p.do(ctx, "role").Slice()
		if err != nil || len(role) == 0 || role[0] != "slave" {
			return fmt.Errorf("%s is not a replica yet: %v %v", p.Addr, role, err)
		}
		return linkUp(ctx, p)
	})
	if err != nil {
		t.Fatalf("waiting for %s to rejoin as a replica: %v", p.Addr, err)
	}
}

// settled reports, as an error, what keeps the setup from being able to
// fail over: a replica out of sync, or a Sentinel that does not know the
// replica or both other Sentinels.
func (s *Sentinel) settled(ctx context.Context) error {
	if err := linkUp(ctx, s.Replica); err != nil {
		return err
	}
	for _, p := range s.Sentinels {
		if err := sentinelSettled(ctx, p, s.MasterName, len(s.Sentinels)-1); err != nil {
			return err
		}
	}
	return nil
}

func sentinelSettled(ctx context.Context, p *Proc, name string, others int) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	known, err := sc.Sentinels(ctx, name).Result()
	if err != nil {
		return fmt.Errorf("SENTINEL SENTINELS on %s: %w", p.Addr, err)
	}
	if len(known) != others {
		return fmt.Errorf("the Sentinel %s knows %d other Sentinels, not %d", p.Addr, len(known), others)
	}
	replicas, err := sc.Replicas(ctx, name).Result()
	if err != nil {
		return fmt.Errorf("SENTINEL REPLICAS on %s: %w", p.Addr, err)
	}
	if len(replicas) != 1 {
		return fmt.Errorf("the Sentinel %s knows %d replicas, not 1", p.Addr, len(replicas))
	}
	if flags := replicas[0]["flags"]; flags != "slave" {
		return fmt.Errorf("the Sentinel %s sees the replica as %q", p.Addr, flags)
	}
	if err := sc.CkQuorum(ctx, name).Err(); err != nil {
		return fmt.Errorf("SENTINEL CKQUORUM on %s: %w", p.Addr, err)
	}
	return nil
}
