package clustertest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// TestSentinel runs the keystore on a master, its replica and three
// Sentinels, through go-redis's failover client. The failover comes last:
// it kills the master.
func TestSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	ctx := context.Background()
	// client i asks the Sentinels starting with the i-th.
	client := func(t testing.TB, i int, hooks ...redis.Hook) redis.UniversalClient {
		addrs := s.SentinelAddrs()
		i %= len(addrs)
		rdb := s.NewClient(t, slices.Concat(addrs[i:], addrs[:i])...)
		for _, h := range hooks {
			rdb.AddHook(h)
		}
		return rdb
	}
	master := func(ctx context.Context) *redistest.Proc {
		addr, err := s.MasterAddr(ctx)
		if err == nil && addr == s.Replica.Addr {
			return s.Replica
		}
		return s.Master
	}
	d := deployment{
		masters: 1,
		client:  client,
		masterOf: func(ctx context.Context, _ string) (string, error) {
			return s.MasterAddr(ctx)
		},
		replicaOf: func(testing.TB, string) *redistest.Proc {
			if master(ctx) == s.Master {
				return s.Replica
			}
			return s.Master
		},
	}
	t.Run("StoreAndVerifier", func(t *testing.T) { testStoreAndVerifier(t, d) })
	t.Run("InstantRevocation", func(t *testing.T) { testInstantRevocation(t, d) })
	t.Run("ReplicaWait", func(t *testing.T) { testReplicaWait(t, d) })
	t.Run("Listing", func(t *testing.T) { testListing(t, d) })
	t.Run("Failover", func(t *testing.T) {
		victim := master(ctx)
		testFailover(t, failoverTarget{
			name: "Sentinel", ns: "kg-failover",
			a: client(t, 0), b: client(t, 1), r: client(t, 2), s: client(t, 0),
			onVictim: func(context.Context, string) bool { return true },
			kill:     func(testing.TB) string { victim.Stop(); return victim.Addr },
			promoted: func(t testing.TB) string { return s.WaitFailover(t, victim).Addr },
			restart: func(t testing.TB) {
				victim.Restart(t)
				s.WaitRejoined(t, victim)
			},
		})
	})
}

// TestSentinelFailoverBeforePublish kills the master between a revoke's
// write (confirmed by a replica: ReplicaWait) and its publish. The revoke
// answers an error (unconfirmed or unavailable) until the replica has taken
// over, then, repeated, succeeds; no verification begun after that success
// admits the key.
func TestSentinelFailoverBeforePublish(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	ctx := context.Background()
	const ns = "kg-publish-failover"
	addrs := s.SentinelAddrs()
	a := newInstance(t, s.NewClient(t, addrs[0], addrs[1], addrs[2]), ns)
	b := newInstance(t, s.NewClient(t, addrs[1], addrs[2], addrs[0]), ns)
	victim := s.Master
	var killed atomic.Bool
	admin := s.NewClient(t, addrs[2], addrs[0], addrs[1])
	admin.AddHook(beforeCommand{arg: ns + ":invalidate", run: func() {
		if killed.CompareAndSwap(false, true) {
			victim.Stop()
		}
	}})
	store, _ := newStore(t, admin, ns, func(o *keystore.Options) { o.ReplicaWait = time.Second })

	k, err := store.Create(ctx, keystore.CreateParams{Name: "failover", Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []*instance{a, b} {
		if _, err := in.verifier.Verify(ctx, k.Secret, keystore.SourceSidecar); err != nil {
			t.Fatal(err)
		}
	}
	var (
		changed, after, admitted atomic.Int64
		stop                     = make(chan struct{})
		wg                       sync.WaitGroup
	)
	for _, in := range []*instance{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				began := changed.Load()
				_, err := in.verifier.Verify(ctx, k.Secret, keystore.SourceSidecar)
				if began == 1 {
					after.Add(1)
					if err == nil {
						admitted.Add(1)
					}
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	start := time.Now()
	var failures []string
	for {
		_, err := store.Revoke(ctx, k.ID, nil)
		if err == nil {
			break
		}
		if !errors.Is(err, keystore.ErrInvalidationUnconfirmed) && !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("Revoke during the failover = %v", err)
		}
		failures = append(failures, err.Error())
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no revoke succeeded in 30s: %v", failures)
		}
		time.Sleep(200 * time.Millisecond)
	}
	changed.Store(1)
	took := time.Since(start)
	// The revoke that succeeded was published and handled: each verifier
	// dropped the key on its invalidation, not only because its
	// subscription broke with the old master.
	for _, in := range []*instance{a, b} {
		if n := testkit.MetricValue(t, in.reg, "keygate_cache_invalidations_total", nil); n < 1 {
			t.Errorf("a verifier handled %v invalidations; the successful revoke was not published to it", n)
		}
	}
	if !killed.Load() {
		t.Fatal("the master was never killed: this test measured nothing")
	}
	if len(failures) == 0 {
		t.Fatal("the first revoke succeeded although its publish met a dead master")
	}
	time.Sleep(time.Second)
	if n := admitted.Load(); n > 0 {
		t.Fatalf("%d of %d verifications begun after the revoke succeeded admitted the key", n, after.Load())
	}
	if after.Load() == 0 {
		t.Fatal("no verification after the revoke: this test measured nothing")
	}
	if got, err := store.Get(ctx, k.ID); err != nil || !got.Revoked {
		t.Fatalf("after the failover: %v, %v", got, err)
	}
	t.Logf("FIGURES Sentinel failover between write and publish: %d failed attempts, success after %v, 0 of %d admitted after",
		len(failures), took.Round(time.Millisecond), after.Load())
}

// beforeCommand is a go-redis hook that calls run before any command with
// the argument arg goes out.
type beforeCommand struct {
	arg string
	run func()
}

func (h beforeCommand) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h beforeCommand) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		for _, a := range cmd.Args() {
			if a == h.arg {
				h.run()
				break
			}
		}
		return next(ctx, cmd)
	}
}
func (h beforeCommand) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
