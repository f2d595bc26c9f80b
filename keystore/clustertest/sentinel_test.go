package clustertest

import (
	"context"
	"slices"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
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
