package keystore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// oldLayoutFixture creates keys of every state in three subjects (valid,
// expiring, expired, revoked, deleted) and turns the namespace's indexes
// into those of the earlier layout, with a stray entry whose record is
// gone, as a crashed create of that version left. It returns the IDs and
// the subjects.
func oldLayoutFixture(t *testing.T, e *env) ([]string, []string) {
	t.Helper()
	ctx := context.Background()
	s := e.store
	subjects := []string{"user_a", "user_b", "org_{c}"}
	var ids []string
	for i := range 45 {
		p := CreateParams{Name: fmt.Sprintf("Key %d", i), Subject: subjects[i%3]}
		if i%5 == 1 || i%5 == 2 {
			p.SecondsUntilExpiration = ptr(int64(10 * (i % 5)))
		}
		ids = append(ids, mustCreate(t, s, p).ID)
		e.clock.Advance(time.Millisecond)
	}
	for i, id := range ids {
		var err error
		switch i % 5 {
		case 3:
			_, err = s.Revoke(ctx, id, nil)
		case 4:
			if i%10 == 4 {
				err = s.Delete(ctx, id)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(15 * time.Second) // the keys of 10s have expired, not those of 20s
	toOldLayout(t, e.rdb, s.Namespace(), append(ids, "ak_"+strings.Repeat("e", 32)))
	return ids, subjects
}

// toOldLayout replaces the indexes of namespace ns by those of the earlier
// layout: every ID in <ns>:keys and in its subject's <ns>:subject:<s>,
// whatever its state, scored by created_at; an ID without a record only in
// <ns>:keys.
func toOldLayout(t *testing.T, rdb *redis.Client, ns string, ids []string) {
	t.Helper()
	ctx := context.Background()
	for _, pattern := range []string{ns + ":sub:*", ns + ":{all}:*"} {
		iter := rdb.Scan(ctx, 0, pattern, 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	}
	for _, id := range ids {
		h := rdb.HGetAll(ctx, ns+":key:"+id).Val()
		if _, deleted := h[fDeleted]; deleted {
			continue
		}
		z := redis.Z{Score: float64(parseMillis(h[fCreatedAt])), Member: id}
		rdb.ZAdd(ctx, ns+":keys", z)
		if sub := h[fSubject]; sub != "" {
			rdb.ZAdd(ctx, ns+":subject:"+sub, z)
		}
	}
}

// liveRecords counts the ids whose records are there.
func liveRecords(t *testing.T, s *Store, ids []string) int {
	t.Helper()
	n := 0
	for _, id := range ids {
		if _, err := s.Get(context.Background(), id); err == nil {
			n++
		}
	}
	return n
}

// checkMigrated checks that nothing of the earlier layout or of the
// migration is left in namespace ns.
func checkMigrated(t *testing.T, rdb *redis.Client, ns string, subjects []string) {
	t.Helper()
	ctx := context.Background()
	names := keyNames{ns}
	left := []string{names.oldAll(), names.migratedSubjects(), names.migrationLock()}
	for _, sub := range subjects {
		left = append(left, names.oldSubject(sub))
	}
	for _, k := range left {
		if n, _ := rdb.Exists(ctx, k).Result(); n != 0 {
			t.Errorf("%s is still there after the migration", k)
		}
	}
	if v, _ := rdb.Get(ctx, names.layout()).Result(); v != layoutVersion {
		t.Errorf("%s = %q, want %q", names.layout(), v, layoutVersion)
	}
}

func TestMigrate(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ids, subjects := oldLayoutFixture(t, e)
		s := newEnv(t, e.rdb, func(o *Options) { o.Now = e.clock.Now }).store // a new process

		_, err := s.List(ctx, ListParams{})
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "migrate") {
			t.Fatalf("List before the migration = %v, want ErrUnavailable naming the migration", err)
		}
		// Verification and changes work meanwhile, and the migration keeps them.
		if _, err := s.Revoke(ctx, ids[0], nil); err != nil {
			t.Fatal(err)
		}
		n, err := s.Migrate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := liveRecords(t, s, ids); n != want {
			t.Errorf("Migrate moved %d keys, want the %d with records", n, want)
		}
		checkMigrated(t, e.rdb, s.Namespace(), subjects)
		checkListings(t, s, ids, subjects...)
		if n, err := s.Migrate(ctx); n != 0 || err != nil {
			t.Fatalf("Migrate again = %d, %v; want 0, nil", n, err)
		}
		// A key an instance of the earlier version indexed after the
		// migration is moved by the next one.
		late := mustCreate(t, s, CreateParams{Name: "Key late", Subject: "user_a"})
		if err := s.index(ctx, placement{id: late.ID, subject: late.Subject, place: placeNone}, 0); err != nil {
			t.Fatal(err)
		}
		e.rdb.ZAdd(ctx, s.names.oldAll(), redis.Z{Score: float64(late.CreatedAt), Member: late.ID})
		if n, err := s.Migrate(ctx); n != 1 || err != nil {
			t.Fatalf("Migrate of one late key = %d, %v; want 1, nil", n, err)
		}
		checkListings(t, s, append(ids, late.ID), subjects...)
	})
}

// TestMigrateFromManyInstances starts five instances' migrations at once:
// one migrates, the others wait, and each key is moved once.
func TestMigrateFromManyInstances(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ids, subjects := oldLayoutFixture(t, e)
		stores := make([]*Store, 5)
		for i := range stores {
			stores[i] = newEnv(t, secondClient(t, e), func(o *Options) { o.Now = e.clock.Now }).store
		}
		moved := make([]int, len(stores))
		errs := make([]error, len(stores))
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() { moved[i], errs[i] = s.Migrate(context.Background()) })
		}
		wg.Wait()
		total := 0
		for i := range stores {
			if errs[i] != nil {
				t.Fatalf("instance %d: %v", i, errs[i])
			}
			total += moved[i]
		}
		if want := liveRecords(t, e.store, ids); total != want || !slices.Contains(moved, want) {
			t.Errorf("the instances moved %v keys, want %d by one of them", moved, want)
		}
		checkMigrated(t, e.rdb, e.store.Namespace(), subjects)
		for _, s := range stores {
			checkListings(t, s, ids, subjects...)
		}
	})
}

// TestMigrateCutShort stops a migration before each of its Redis commands
// in turn, as a crash would; once its lock has lapsed, another instance
// finishes it, and every listing is exact.
func TestMigrateCutShort(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		for at := 1; ; at++ {
			ns := "mcut" + strconv.Itoa(at)
			fix := newEnv(t, secondClient(t, e), func(o *Options) { o.Namespace, o.Now = ns, e.clock.Now })
			ids, subjects := oldLayoutFixture(t, fix)

			hook := &cutHook{}
			rdb := secondClient(t, e)
			rdb.AddHook(hook)
			dying := newEnv(t, rdb, func(o *Options) { o.Namespace, o.Now = ns, e.clock.Now })
			hook.cut(at)
			_, err := dying.store.Migrate(ctx)
			if !hook.cutReached() {
				if err != nil {
					t.Fatal(err)
				}
				if at < 5 {
					t.Fatalf("the migration sent only %d commands", at)
				}
				return
			}
			e.rdb.Del(ctx, fix.store.names.migrationLock()) // as its TTL would
			next := newEnv(t, secondClient(t, e), func(o *Options) { o.Namespace, o.Now = ns, e.clock.Now })
			if _, err := next.store.Migrate(ctx); err != nil {
				t.Fatalf("cut at %d: the next migration: %v", at, err)
			}
			checkMigrated(t, e.rdb, ns, subjects)
			checkListings(t, next.store, ids, subjects...)
			if at > 40 {
				t.Fatal("the migration was still being cut after 40 commands")
			}
		}
	})
}

// beforePlacing runs fn once, before the first pipeline of scripts: on a
// migrating store's client, the one that places the first batch.
type beforePlacing struct {
	once sync.Once
	fn   func()
}

func (h *beforePlacing) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *beforePlacing) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *beforePlacing) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && (cmds[0].Name() == "evalsha" || cmds[0].Name() == "eval") {
			h.once.Do(h.fn)
		}
		return next(ctx, cmds)
	}
}

// TestMigrateKeepsAChangeMadeMeanwhile revokes a key after the migration
// read its record and before it placed the key: the migration must not put
// it back among the valid keys.
func TestMigrateKeepsAChangeMadeMeanwhile(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		ids, subjects := oldLayoutFixture(t, e)
		target := ids[40] // valid, never expiring
		hook := &beforePlacing{fn: func() {
			if _, err := e.store.Revoke(ctx, target, nil); err != nil {
				t.Error(err)
			}
		}}
		rdb := secondClient(t, e)
		rdb.AddHook(hook)
		s := newEnv(t, rdb, func(o *Options) { o.Now = e.clock.Now }).store
		if _, err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		k, err := s.Get(ctx, target)
		if err != nil || !k.Revoked {
			t.Fatalf("the target: %+v, %v; want revoked (the hook did not run?)", k, err)
		}
		for _, sc := range []scope{s.names.allScope(), s.names.subjectScope(k.Subject)} {
			if _, err := e.rdb.ZScore(ctx, sc.valid, target).Result(); !errors.Is(err, redis.Nil) {
				t.Errorf("the migration put the revoked key back in %s", sc.valid)
			}
		}
		checkListings(t, s, ids, subjects...)
	})
}
