package clustertest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// testListing lists keys of every state (valid, revoked, deleted,
// expired by the clock) over six subjects, a subject at a time and all
// together, pages at several offsets, with and without invalid keys; then
// turns the indexes into those of the earlier layout and migrates them
// from three instances at once, and lists again. No reply may be a
// redirection or a cluster error.
func testListing(t *testing.T, d deployment) {
	ctx := context.Background()
	const ns = "kg-list"
	errs := &clusterErrors{}
	clock := testclock.New()
	withClock := func(o *keystore.Options) { o.LastUsedFlush, o.Now = -1, clock.Now }
	store, logs := newStore(t, d.client(t, 0, errs), ns, withClock)

	subjects := []string{"user_0", "user_1", "user_2", "org_{3}", "org_4", "org_5"}
	var ids []string
	for i := range 120 {
		p := keystore.CreateParams{Name: fmt.Sprintf("key %03d", i), Subject: subjects[i%len(subjects)]}
		if i%4 == 1 {
			p.SecondsUntilExpiration = ptr(int64(10 + 20*(i%3)))
		}
		k, err := store.Create(ctx, p)
		if err != nil {
			t.Fatalf("creating key %d: %v", i, err)
		}
		ids = append(ids, k.ID)
		clock.Advance(time.Millisecond)
	}
	for i, id := range ids {
		var err error
		switch i % 7 {
		case 2:
			_, err = store.Revoke(ctx, id, nil)
		case 3:
			err = store.Delete(ctx, id)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(15 * time.Second) // the keys of 10s expire, those of 30s and 50s do not
	checkListed(t, store, ids, subjects)

	// The earlier layout: every key with a record in <ns>:keys and in
	// <ns>:subject:<subject>, nothing in the current indexes.
	rdb := d.client(t, 1, errs)
	for _, sub := range append(subjects, "") {
		prefix := ns + ":{all}:"
		if sub != "" {
			prefix = ns + ":sub:{" + sub + "}:"
		}
		for _, set := range []string{"valid", "invalid", "expiry", "changing", "layout"} {
			if err := rdb.Del(ctx, prefix+set).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids {
		k, err := store.Get(ctx, id)
		if errors.Is(err, keystore.ErrNotFound) {
			continue
		}
		z := redis.Z{Score: float64(k.CreatedAt), Member: id}
		if err := errors.Join(rdb.ZAdd(ctx, ns+":keys", z).Err(), rdb.ZAdd(ctx, ns+":subject:"+k.Subject, z).Err()); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	moved := make([]int, 3)
	for i := range moved {
		s, _ := newStore(t, d.client(t, i, errs), ns, withClock)
		wg.Go(func() {
			var err error
			if moved[i], err = s.Migrate(ctx); err != nil {
				t.Errorf("instance %d migrating: %v", i, err)
			}
		})
	}
	wg.Wait()
	t.Logf("keys moved by each of three instances migrating at once: %v", moved)
	for _, k := range append([]string{ns + ":keys"}, ns+":subject:user_0") {
		if n, _ := rdb.Exists(ctx, k).Result(); n != 0 {
			t.Errorf("%s is left after the migration", k)
		}
	}
	checkListed(t, store, ids, subjects)

	if s := errs.String(); s != "" {
		t.Errorf("Redis answered with redirections or cluster errors: %s", s)
	}
	if l := logs.String(); strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
		t.Errorf("the store logged problems:\n%s", l)
	}
}

func ptr[T any](v T) *T { return &v }

// checkListed compares listings of every kind with what the records of ids
// say they must be.
func checkListed(t *testing.T, store *keystore.Store, ids, subjects []string) {
	t.Helper()
	ctx := context.Background()
	var keys []*keystore.APIKey
	for _, id := range ids {
		k, err := store.Get(ctx, id)
		if errors.Is(err, keystore.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b *keystore.APIKey) int {
		return cmp.Or(cmp.Compare(b.CreatedAt, a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	for _, sub := range append([]string{""}, subjects...) {
		for _, invalid := range []bool{false, true} {
			for _, page := range [][2]int{{0, 100}, {5, 7}, {60, 10}} {
				p := keystore.ListParams{Subject: sub, IncludeInvalid: invalid, Offset: page[0], Limit: page[1]}
				var want []string
				for _, k := range keys {
					if (sub == "" || k.Subject == sub) && (invalid || !k.Revoked && !k.Expired) {
						want = append(want, k.ID)
					}
				}
				total := len(want)
				want = want[min(p.Offset, total):min(p.Offset+p.Limit, total)]
				l, err := store.List(ctx, p)
				if err != nil {
					t.Fatalf("List(%+v): %v", p, err)
				}
				var got []string
				for _, k := range l.Data {
					got = append(got, k.ID)
				}
				if !slices.Equal(got, want) || l.TotalCount != total {
					t.Fatalf("List(%+v): %v total %d\nwant %v total %d", p, got, l.TotalCount, want, total)
				}
			}
		}
	}
}
