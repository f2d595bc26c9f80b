package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// deployment is what the shared tests need of a replicated Redis.
type deployment struct {
	// client returns a new client, closed at cleanup, that first dials the
	// i-th seed (a Cluster node, or a Sentinel), with hooks on every
	// connection it makes.
	client func(t testing.TB, i int, hooks ...redis.Hook) redis.UniversalClient
	// masters is how many masters share the keyspace.
	masters int
	// masterOf names the server that holds key now.
	masterOf func(ctx context.Context, key string) (string, error)
	// replicaOf returns a replica of the master that holds key now.
	replicaOf func(t testing.TB, key string) *redistest.Proc
}

// testStoreAndVerifier runs the store and a verifier over 200 keys of 50
// subjects: create, get, list, verify, update, revoke, delete and the
// last-used flush, and checks that the keys spread over every master and
// that no reply ever was CROSSSLOT, MOVED, ASK, TRYAGAIN or CLUSTERDOWN.
func testStoreAndVerifier(t *testing.T, d deployment) {
	ctx := context.Background()
	const ns = "kg-crud"
	errs := &clusterErrors{}
	rdb := d.client(t, 0, errs)
	in := newInstance(t, rdb, ns, func(o *keystore.Options) { o.LastUsedFlush = -1 })
	store, v := in.store, in.verifier

	const subjects, perSubject = 50, 4
	subject := func(i int) string { return fmt.Sprintf("user_%02d", i%subjects) }
	keys := make([]*keystore.APIKey, subjects*perSubject)
	for i := range keys {
		k, err := store.Create(ctx, keystore.CreateParams{
			Name: fmt.Sprintf("key %03d", i), Subject: subject(i), Scopes: []string{"read"},
		})
		if err != nil {
			t.Fatalf("creating key %d: %v", i, err)
		}
		keys[i] = k
	}

	records, indexes := map[string]int{}, map[string]int{}
	for i, k := range keys {
		addr, err := d.masterOf(ctx, recordKey(ns, k.ID))
		if err != nil {
			t.Fatal(err)
		}
		records[addr]++
		if i < subjects {
			addr, err := d.masterOf(ctx, ns+":sub:{"+subject(i)+"}:valid")
			if err != nil {
				t.Fatal(err)
			}
			indexes[addr]++
		}
	}
	t.Logf("records per master: %v; subject indexes per master: %v", records, indexes)
	if len(records) != d.masters || len(indexes) != d.masters {
		t.Fatalf("keys landed on %d masters and subject indexes on %d, want all %d", len(records), len(indexes), d.masters)
	}

	// Every key verifies, the second time from the cache.
	hits := in.cacheHits(t)
	for _, k := range keys {
		for range 2 {
			got, err := v.Verify(ctx, k.Secret, keystore.SourceAPI, "read")
			if err != nil || got.ID != k.ID || got.Subject != k.Subject {
				t.Fatalf("verifying %s: %v, %+v", k.ID, err, got)
			}
		}
	}
	if n := in.cacheHits(t) - hits; n < uint64(len(keys))/2 {
		t.Errorf("the cache answered %d of %d second verifications", n, len(keys))
	}
	for _, k := range keys {
		got, err := store.Get(ctx, k.ID)
		if err != nil || got.Name != k.Name || got.Subject != k.Subject || !slices.Equal(got.Scopes, k.Scopes) {
			t.Fatalf("getting %s: %v, %+v", k.ID, err, got)
		}
	}
	listSubjects(t, store, subjects, perSubject, perSubject)
	listAll(t, store, false, len(keys))

	// Per subject: the first key loses its scope, the second is revoked,
	// the third deleted; every verifier answer changes at once.
	for s := range subjects {
		upd, rev, del := keys[s], keys[s+subjects], keys[s+2*subjects]
		if _, err := store.Update(ctx, upd.ID, keystore.UpdateParams{Scopes: &[]string{"write"}}); err != nil {
			t.Fatalf("updating %s: %v", upd.ID, err)
		}
		if _, err := store.Revoke(ctx, rev.ID, nil); err != nil {
			t.Fatalf("revoking %s: %v", rev.ID, err)
		}
		if err := store.Delete(ctx, del.ID); err != nil {
			t.Fatalf("deleting %s: %v", del.ID, err)
		}
		for _, c := range []struct {
			k    *keystore.APIKey
			want error
		}{{upd, keystore.ErrInsufficientScope}, {rev, keystore.ErrRevoked}, {del, keystore.ErrNotFound}} {
			if _, err := v.Verify(ctx, c.k.Secret, keystore.SourceAPI, "read"); !errors.Is(err, c.want) {
				t.Fatalf("verifier on %s after the change: %v, want %v", c.k.ID, err, c.want)
			}
		}
		if _, err := store.Verify(ctx, rev.Secret); !errors.Is(err, keystore.ErrRevoked) {
			t.Fatalf("store on revoked %s: %v", rev.ID, err)
		}
		if _, err := store.Get(ctx, del.ID); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("getting deleted %s: %v", del.ID, err)
		}
	}
	listSubjects(t, store, subjects, 2, 3)
	listAll(t, store, false, 2*subjects)
	listAll(t, store, true, 3*subjects)

	// The uses recorded above reach every master in one flush.
	if err := store.FlushLastUsed(ctx); err != nil {
		t.Fatalf("flushing last-used times: %v", err)
	}
	for i, k := range keys {
		if i < 2*subjects && i >= subjects || i >= 2*subjects && i < 3*subjects {
			continue // revoked or deleted
		}
		got, err := store.Get(ctx, k.ID)
		if err != nil || got.LastUsedAt == nil {
			t.Fatalf("key %s after the flush: %v, last_used_at %v", k.ID, err, got.LastUsedAt)
		}
	}
	// Rate limits, credits and the usage history, on keys spread over
	// every master: one script per verification, one pipeline per flush.
	masters := map[string]bool{}
	for i := range 30 {
		k, err := store.Create(ctx, keystore.CreateParams{Name: fmt.Sprintf("metered %d", i), Subject: subject(i),
			RateLimits: []keystore.RateLimit{{Name: "default", Limit: 2, DurationMs: 60_000}},
			Credits:    &keystore.Credits{Remaining: 1}})
		if err != nil {
			t.Fatal(err)
		}
		addr, err := d.masterOf(ctx, recordKey(ns, k.ID))
		if err != nil {
			t.Fatal(err)
		}
		masters[addr] = true
		if _, err := v.Check(ctx, keystore.Request{Secret: k.Secret, Source: keystore.SourceAPI}); err != nil {
			t.Fatalf("metered key %d: %v", i, err)
		}
		if _, err := v.Check(ctx, keystore.Request{Secret: k.Secret, Source: keystore.SourceAPI}); !errors.Is(err, keystore.ErrUsageExceeded) {
			t.Fatalf("metered key %d, second use: %v, want out of credits", i, err)
		}
	}
	if len(masters) != d.masters {
		t.Errorf("metered keys on %d masters, want %d", len(masters), d.masters)
	}
	if err := store.FlushUsage(ctx); err != nil {
		t.Fatalf("flushing the usage history: %v", err)
	}
	if s := errs.String(); s != "" {
		t.Errorf("Redis answered with redirections or cluster errors: %s", s)
	}
	if logs := in.logs.String(); strings.Contains(logs, "level=ERROR") || strings.Contains(logs, "level=WARN") {
		t.Errorf("the store logged problems:\n%s", logs)
	}
}

// listSubjects checks every subject's listing: valid keys newest first,
// and the count with the invalid ones.
func listSubjects(t *testing.T, store *keystore.Store, subjects, valid, all int) {
	t.Helper()
	ctx := context.Background()
	for s := range subjects {
		subject := fmt.Sprintf("user_%02d", s)
		for _, c := range []struct {
			invalid bool
			want    int
		}{{false, valid}, {true, all}} {
			list, err := store.List(ctx, keystore.ListParams{Subject: subject, IncludeInvalid: c.invalid, Limit: 100})
			if err != nil {
				t.Fatalf("listing %s: %v", subject, err)
			}
			if list.TotalCount != c.want || len(list.Data) != c.want {
				t.Fatalf("listing %s (include_invalid %v): %d keys, total_count %d, want %d", subject, c.invalid, len(list.Data), list.TotalCount, c.want)
			}
			for i, k := range list.Data {
				if k.Subject != subject || i > 0 && k.CreatedAt > list.Data[i-1].CreatedAt {
					t.Fatalf("listing %s: key %d is %s of %s, created %d, not newest first", subject, i, k.ID, k.Subject, k.CreatedAt)
				}
			}
		}
	}
}

// listAll checks the listing of every subject, page by page.
func listAll(t *testing.T, store *keystore.Store, invalid bool, want int) {
	t.Helper()
	seen := map[string]bool{}
	for offset := 0; offset < want; offset += 100 {
		list, err := store.List(context.Background(), keystore.ListParams{IncludeInvalid: invalid, Limit: 100, Offset: offset})
		if err != nil {
			t.Fatalf("listing every subject: %v", err)
		}
		if list.TotalCount != want {
			t.Fatalf("listing every subject (include_invalid %v): total_count %d, want %d", invalid, list.TotalCount, want)
		}
		for _, k := range list.Data {
			seen[k.ID] = true
		}
	}
	if len(seen) != want {
		t.Fatalf("the pages of every subject held %d distinct keys, want %d", len(seen), want)
	}
}

// testInstantRevocation caches keys in two verifier instances whose clients
// first dialled different seeds, changes each key through a third
// instance, and checks that the very next verification on both refuses it.
func testInstantRevocation(t *testing.T, d deployment) {
	const ns, rounds = "kg-instant", 60
	a := newInstance(t, d.client(t, 0), ns)
	b := newInstance(t, d.client(t, 1), ns)
	admin, _ := newStore(t, d.client(t, 2), ns)
	hitsA, hitsB := a.cacheHits(t), b.cacheHits(t)
	checkInstant(t, admin, rounds, a, b)
	// Without the caches in use, the test would prove nothing.
	for name, n := range map[string]uint64{"A": a.cacheHits(t) - hitsA, "B": b.cacheHits(t) - hitsB} {
		t.Logf("instance %s: %d of %d second verifications from the cache", name, n, rounds)
		if n < rounds/2 {
			t.Errorf("instance %s answered only %d of %d second verifications from its cache", name, n, rounds)
		}
	}
	for name, in := range map[string]*instance{"A": a, "B": b} {
		if logs := in.logs.String(); strings.Contains(logs, "level=WARN") || strings.Contains(logs, "level=ERROR") {
			t.Errorf("instance %s logged problems:\n%s", name, logs)
		}
	}
}

// testReplicaWait checks Options.ReplicaWait against the key's real
// replica: the change does not return while the replica is frozen, and
// one the replica does not confirm in time succeeds with a warning.
func testReplicaWait(t *testing.T, d deployment) {
	ctx := context.Background()
	const ns = "kg-wait"
	rdb := d.client(t, 0)
	store, logs := newStore(t, rdb, ns, func(o *keystore.Options) { o.ReplicaWait = 5 * time.Second })
	k, err := store.Create(ctx, keystore.CreateParams{Name: "n", Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	replica := d.replicaOf(t, recordKey(ns, k.ID))

	replica.Pause(t)
	done := make(chan error, 1)
	go func() { _, err := store.Revoke(ctx, k.ID, nil); done <- err }()
	select {
	case err := <-done:
		replica.Resume(t)
		t.Fatalf("Revoke returned (%v) while the key's only replica was frozen: it did not wait for the replica", err)
	case <-time.After(500 * time.Millisecond):
	}
	replica.Resume(t)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Revoke once the replica was back: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Revoke did not return within 10s of the replica's return")
	}
	if err := store.Delete(ctx, k.ID); err != nil {
		t.Fatalf("Delete with a replica in sync: %v", err)
	}
	if s := logs.String(); strings.Contains(s, "no replica confirmed") {
		t.Errorf("changes confirmed by the replica logged:\n%s", s)
	}

	reg := prometheus.NewRegistry()
	short, logs := newStore(t, rdb, ns, func(o *keystore.Options) {
		o.ReplicaWait = 200 * time.Millisecond
		o.Registerer = reg
	})
	k, err = short.Create(ctx, keystore.CreateParams{Name: "n", Subject: "s", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	replica = d.replicaOf(t, recordKey(ns, k.ID))
	replica.Pause(t)
	_, err = short.Update(ctx, k.ID, keystore.UpdateParams{Scopes: &[]string{"write"}})
	replica.Resume(t)
	if err != nil {
		t.Fatalf("Update that no replica confirmed in time: %v; want success, the change is made", err)
	}
	if got, err := short.Get(ctx, k.ID); err != nil || !slices.Equal(got.Scopes, []string{"write"}) {
		t.Fatalf("the key after the update: %v, %+v", err, got)
	}
	if !strings.Contains(logs.String(), "no replica confirmed a change") || !strings.Contains(logs.String(), k.ID) {
		t.Errorf("an unconfirmed change was not logged with its key ID:\n%s", logs.String())
	}
	if n := testkit.MetricValue(t, reg, "keygate_store_errors_total", map[string]string{"op": "replica_wait"}); n != 1 {
		t.Errorf(`keygate_store_errors_total{op="replica_wait"} = %v, want 1`, n)
	}
}
