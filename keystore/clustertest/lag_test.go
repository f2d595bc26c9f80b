package clustertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// TestReplicaWaitLaggingReplica measures what Redis's asynchronous
// replication does to revocations acknowledged just before the master dies,
// when the replica lags: the replica replicates through a proxy that holds
// the master's stream back by replicationLag; after the revocations the
// link is cut (what it had not delivered is lost, as in a partition), the
// master killed and the replica promoted, as Sentinel would. Without
// ReplicaWait the revocations still in flight are lost; with it, none is.
func TestReplicaWaitLaggingReplica(t *testing.T) {
	t.Parallel()
	const replicationLag, n = 300 * time.Millisecond, 40
	for _, tc := range []struct {
		name string
		wait time.Duration
	}{
		{"default", 0},
		{"ReplicaWait", 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			master := redistest.Start(t, "--repl-diskless-sync-delay", "0")
			proxy, err := redistest.NewProxy(t, master.Addr)
			if err != nil {
				t.Fatal(err)
			}
			proxy.SetLag(replicationLag)
			host, port := splitAddr(t, proxy.Addr)
			replica := redistest.Start(t, "--replicaof", host, port)
			linkUp(t, replica.Addr)

			rdb := redis.NewClient(redistest.ClientOptions(master.Addr))
			t.Cleanup(func() { rdb.Close() })
			const ns = "kg-lag"
			store, logs := newStore(t, rdb, ns, func(o *keystore.Options) { o.ReplicaWait = tc.wait })
			keys := make([]*keystore.APIKey, n)
			for i := range keys {
				k, err := store.Create(ctx, keystore.CreateParams{Name: "n", Subject: fmt.Sprintf("user_%d", i)})
				if err != nil {
					t.Fatal(err)
				}
				keys[i] = k
			}
			replicaRDB := redis.NewClient(redistest.ClientOptions(replica.Addr))
			t.Cleanup(func() { replicaRDB.Close() })
			waitReplicated(t, replicaRDB, recordKey(ns, keys[n-1].ID))

			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for _, k := range keys {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := store.Revoke(ctx, k.ID, nil); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			took := time.Since(start)
			close(errs)
			for err := range errs {
				t.Fatalf("revoking: %v", err)
			}
			// Every revocation is acknowledged. Now the partition and the crash.
			proxy.Cut(true)
			master.Stop()
			if err := replicaRDB.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
				t.Fatalf("promoting the replica: %v", err)
			}

			promoted, _ := newStore(t, replicaRDB, ns)
			lost := 0
			for _, k := range keys {
				switch _, err := promoted.Verify(ctx, k.Secret); {
				case err == nil:
					lost++
				case !errors.Is(err, keystore.ErrRevoked):
					t.Errorf("key %s on the promoted replica: %v", k.ID, err)
				}
			}
			t.Logf("FIGURES lagging replica (%s, replication %v behind): %d revocations took %v; %d of %d acknowledged revocations lost after the promotion",
				tc.name, replicationLag, n, took.Round(time.Millisecond), lost, n)
			switch {
			case tc.wait == 0 && lost == 0:
				t.Fatal("the proxy did not hold replication back: without ReplicaWait no revocation was lost, so this test measures nothing")
			case tc.wait > 0 && lost > 0:
				t.Errorf("with ReplicaWait, %d of %d acknowledged revocations were lost", lost, n)
			}
			if tc.wait > 0 && strings.Contains(logs.String(), "no replica confirmed") {
				t.Errorf("the lagging replica confirmed too late:\n%s", logs.String())
			}
		})
	}
}

// waitReplicated waits, a bounded time, until the replica holds key.
func waitReplicated(t testing.TB, replica *redis.Client, key string) {
	t.Helper()
	testkit.WaitFor(t, "the replica holding "+key, 10*time.Second, func() bool { return replica.Exists(context.Background(), key).Val() == 1 })
}
