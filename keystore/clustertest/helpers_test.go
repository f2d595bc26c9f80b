package clustertest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// instance is one keygate process, as far as Redis can tell: a store and a
// caching verifier on their own client.
type instance struct {
	store    *keystore.Store
	verifier *keystore.Verifier
	reg      *prometheus.Registry
	logs     *syncbuf.Buffer
}

// newStore returns a store in namespace ns on rdb, closed at cleanup.
func newStore(t testing.TB, rdb redis.UniversalClient, ns string, opts ...func(*keystore.Options)) (*keystore.Store, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	o := keystore.Options{Namespace: ns, Logger: testkit.LogTo(logs), Registerer: prometheus.NewRegistry()}
	for _, f := range opts {
		f(&o)
	}
	s, err := keystore.New(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// newInstance returns a store and a caching verifier on rdb, closed at
// cleanup, once the verifier's invalidation subscription is live.
func newInstance(t testing.TB, rdb redis.UniversalClient, ns string, opts ...func(*keystore.Options)) *instance {
	t.Helper()
	in := &instance{reg: prometheus.NewRegistry()}
	in.store, in.logs = newStore(t, rdb, ns, opts...)
	v, err := keystore.NewVerifier(in.store, keystore.VerifierOptions{
		CacheTTL: time.Minute, Registerer: in.reg, Logger: testkit.LogTo(in.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	in.verifier = v
	waitReady(t, v)
	return in
}

// waitReady waits, a bounded time, until every verifier can answer from its
// cache: Redis answers and its invalidation subscription is proven live.
func waitReady(t testing.TB, vs ...*keystore.Verifier) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, v := range vs {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := v.Ready(ctx)
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("verifier %s not ready after 30s: %v", v.InstanceID(), err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// cacheHits is how many verifications the cache answered.
func (in *instance) cacheHits(t testing.TB) uint64 {
	t.Helper()
	return testkit.HistogramCount(t, in.reg, "keygate_verification_duration_seconds", map[string]string{"cache": "hit"})
}

// recordKey is the Redis key of a key's record (keystore/README.md).
func recordKey(ns, id string) string { return ns + ":key:" + id }

// clusterErrors is a go-redis hook that counts, per node, the replies that
// would mean keygate's layout or routing is wrong for Redis Cluster.
type clusterErrors struct {
	mu   sync.Mutex
	seen map[string]int // error prefix → count
}

var clusterErrorPrefixes = []string{"CROSSSLOT", "MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"}

func (c *clusterErrors) note(cmds ...redis.Cmder) {
	for _, cmd := range cmds {
		for _, p := range clusterErrorPrefixes {
			if redis.HasErrorPrefix(cmd.Err(), p) {
				c.mu.Lock()
				if c.seen == nil {
					c.seen = map[string]int{}
				}
				c.seen[p]++
				c.mu.Unlock()
			}
		}
	}
}

func (c *clusterErrors) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) == 0 {
		return ""
	}
	return fmt.Sprint(c.seen)
}

func (c *clusterErrors) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *clusterErrors) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		c.note(cmd)
		return err
	}
}

func (c *clusterErrors) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		c.note(cmds...)
		return err
	}
}

// linkUp waits, a bounded time, until the replica at addr is in sync with
// its master.
func linkUp(t testing.TB, addr string) {
	t.Helper()
	rdb := redis.NewClient(redistest.ClientOptions(addr))
	defer rdb.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := rdb.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica %s is not in sync after 30s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func splitAddr(t testing.TB, addr string) (host, port string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}
