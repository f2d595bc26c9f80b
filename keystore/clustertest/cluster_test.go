package clustertest

import (
	"context"
	"fmt"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestCluster runs the keystore on a real Redis Cluster of 3 masters and 3
// replicas. The failover comes last: it kills a master.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	ctx := context.Background()
	masterOf := func(t testing.TB, key string) *redistest.ClusterNode {
		t.Helper()
		m, err := c.MasterOf(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	d := deployment{
		masters: 3,
		client: func(t testing.TB, i int, hooks ...redis.Hook) redis.UniversalClient {
			rdb := c.NewClient(t, c.Nodes[i%len(c.Nodes)])
			for _, h := range hooks {
				rdb.OnNewNode(func(node *redis.Client) { node.AddHook(h) })
			}
			return rdb
		},
		masterOf: func(ctx context.Context, key string) (string, error) {
			m, err := c.MasterOf(ctx, key)
			if err != nil {
				return "", err
			}
			return m.Addr, nil
		},
		replicaOf: func(t testing.TB, key string) *redistest.Proc {
			t.Helper()
			r, err := c.ReplicaOf(ctx, masterOf(t, key))
			if err != nil {
				t.Fatal(err)
			}
			return r.Proc
		},
	}
	t.Run("StoreAndVerifier", func(t *testing.T) { testStoreAndVerifier(t, d) })
	t.Run("InstantRevocation", func(t *testing.T) { testInstantRevocation(t, d) })
	t.Run("ReplicaWait", func(t *testing.T) { testReplicaWait(t, d) })
	t.Run("AuditAndWebhooks", func(t *testing.T) { testAuditAndWebhooks(t, d) })
	t.Run("Listing", func(t *testing.T) { testListing(t, d) })
	t.Run("Failover", func(t *testing.T) {
		// A namespace whose verifier registry and invalidation channel live
		// on one master: killing it cuts the subscriptions, the registry and
		// the hot keys at once.
		var ns string
		var victim *redistest.ClusterNode
		for i := 0; victim == nil; i++ {
			if i == 100 {
				t.Fatal("no namespace among 100 puts its registry and channel on one master")
			}
			ns = fmt.Sprintf("kg-failover-%d", i)
			if m := masterOf(t, ns+":verifiers"); m == masterOf(t, ns+":invalidate") {
				victim = m
			}
		}
		var other *redistest.ClusterNode
		for _, n := range c.Nodes {
			if n != victim {
				other = n
				break
			}
		}
		testFailover(t, failoverTarget{
			name: "Cluster", ns: ns, shards: true,
			a: c.NewClient(t, victim), // its only seed is about to die
			b: c.NewClient(t, other),
			r: c.NewClient(t), s: c.NewClient(t),
			onVictim: func(ctx context.Context, key string) bool {
				m, err := c.MasterOf(ctx, key)
				return err == nil && m == victim
			},
			kill:     func(testing.TB) string { victim.Stop(); return victim.Addr },
			promoted: func(t testing.TB) string { return c.WaitFailover(t, victim).Addr },
			restart: func(t testing.TB) {
				victim.Restart(t)
				c.WaitRejoined(t, victim)
			},
		})
	})
}
