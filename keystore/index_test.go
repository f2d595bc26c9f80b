package keystore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/redis/go-redis/v9"
)

// expectedList is what List must answer for p, worked out from the
// records of ids alone (Get), the way docs/api.md describes a listing.
func expectedList(t *testing.T, s *Store, ids []string, p ListParams) []string {
	t.Helper()
	ctx := context.Background()
	var keys []*APIKey
	for _, id := range ids {
		k, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Subject != "" && k.Subject != p.Subject ||
			!p.IncludeInvalid && (k.Revoked || k.Expired || !k.Enabled) ||
			!strings.Contains(strings.ToLower(k.Name), strings.ToLower(p.Query)) {
			continue
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b *APIKey) int {
		return cmp.Or(cmp.Compare(b.CreatedAt, a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	limit := cmp.Or(p.Limit, DefaultLimit)
	out := []string{}
	for i := p.Offset; i < len(keys) && i < p.Offset+limit; i++ {
		out = append(out, keys[i].ID)
	}
	return append(out, "total="+strconv.Itoa(len(keys)))
}

// listed is List's answer in the form of expectedList.
func listed(t *testing.T, s *Store, p ListParams) []string {
	t.Helper()
	l, err := s.List(context.Background(), p)
	if err != nil {
		t.Fatalf("List(%+v): %v", p, err)
	}
	out := []string{}
	for _, k := range l.Data {
		out = append(out, k.ID)
	}
	return append(out, "total="+strconv.Itoa(l.TotalCount))
}

// listParamsToCheck are listings of every kind: each subject and every
// subject, with and without invalid keys, pages at several offsets, and
// queries.
func listParamsToCheck(subjects ...string) []ListParams {
	var ps []ListParams
	for _, sub := range append([]string{""}, subjects...) {
		for _, inv := range []bool{false, true} {
			for _, page := range [][2]int{{0, 100}, {0, 3}, {2, 5}, {7, 4}, {40, 10}} {
				ps = append(ps, ListParams{Subject: sub, IncludeInvalid: inv, Offset: page[0], Limit: page[1]})
			}
			ps = append(ps, ListParams{Subject: sub, IncludeInvalid: inv, Query: "KEY 1", Limit: 100},
				ListParams{Subject: sub, IncludeInvalid: inv, Query: "y 2", Offset: 1, Limit: 2})
		}
	}
	return ps
}

// checkListings compares every listing of listParamsToCheck with what the
// records of ids say it must be.
func checkListings(t *testing.T, s *Store, ids []string, subjects ...string) {
	t.Helper()
	checkListingsOf(t, s, ids, listParamsToCheck(subjects...))
}

// fewListParams are fewer listings of listParamsToCheck's kinds.
func fewListParams(subject string) []ListParams {
	var ps []ListParams
	for _, sub := range []string{"", subject} {
		for _, inv := range []bool{false, true} {
			ps = append(ps, ListParams{Subject: sub, IncludeInvalid: inv, Limit: 100},
				ListParams{Subject: sub, IncludeInvalid: inv, Offset: 2, Limit: 3})
		}
	}
	return append(ps, ListParams{Query: "key 1", Limit: 100})
}

// checkListingsOf compares the listings ps with what the records of ids
// say they must be.
func checkListingsOf(t *testing.T, s *Store, ids []string, ps []ListParams) {
	t.Helper()
	for _, p := range ps {
		want := expectedList(t, s, ids, p)
		if got := listed(t, s, p); !slices.Equal(got, want) {
			t.Fatalf("List(%+v)\n got %v\nwant %v", p, got, want)
		}
	}
}

// TestListFollowsChanges runs random creates (some expiring, some in the
// same millisecond), revokes, deletes, expiration changes and clock moves
// across expirations, and after each round checks every kind of listing
// against the records.
func TestListFollowsChanges(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := e.store
		rng := rand.New(rand.NewPCG(21, 1))
		subjects := []string{"user_a", "user_b", "org_{c}"}
		var ids []string
		for round := 0; round < 12; round++ {
			for range 12 {
				ids = append(ids, s.mustRandomCreate(t, rng, subjects, len(ids)))
				if rng.IntN(3) > 0 {
					e.clock.Advance(time.Duration(rng.IntN(3)) * time.Millisecond)
				}
			}
			for range 4 {
				id := ids[rng.IntN(len(ids))]
				var err error
				switch rng.IntN(9) {
				case 0:
					_, err = s.Revoke(ctx, id, nil)
				case 1:
					err = s.Delete(ctx, id)
				case 2:
					_, err = s.Update(ctx, id, UpdateParams{SecondsUntilExpiration: ptr(int64(1 + rng.IntN(20)))})
				case 3:
					_, err = s.Update(ctx, id, UpdateParams{NeverExpires: true})
				case 4:
					_, err = s.Update(ctx, id, UpdateParams{Enabled: ptr(false)})
				case 5:
					_, err = s.Update(ctx, id, UpdateParams{Enabled: ptr(true)})
				case 6:
					var k *APIKey
					if k, err = s.Roll(ctx, id, time.Duration(rng.IntN(3))*time.Second); err == nil {
						ids = append(ids, k.ID)
					}
				case 7:
					if rng.IntN(4) == 0 { // rarely: it empties a subject
						_, err = s.RevokeAll(ctx, subjects[rng.IntN(len(subjects))], nil)
					}
				case 8:
					var k *APIKey
					sum := sha256.Sum256([]byte(fmt.Sprintf("foreign secret %d %d", round, rng.Int())))
					if k, err = s.Import(ctx, ImportParams{CreateParams: CreateParams{Name: fmt.Sprintf("Key %d", len(ids)), Subject: subjects[rng.IntN(len(subjects))]},
						Hash: ImportHash{Algorithm: "sha256", Value: hex.EncodeToString(sum[:])}}); err == nil {
						ids = append(ids, k.ID)
					}
				}
				if err != nil && !errors.Is(err, ErrNotFound) && !isValidation(err) { // a roll of a revoked, expired or rolled key
					t.Fatal(err)
				}
			}
			e.clock.Advance(time.Duration(rng.IntN(6000)) * time.Millisecond)
			checkListings(t, s, ids, subjects...)
		}
	})
}

// mustRandomCreate creates the i-th key, of a random subject, expiring in
// 1 to 20 seconds or never, and returns its ID.
func (s *Store) mustRandomCreate(t *testing.T, rng *rand.Rand, subjects []string, i int) string {
	t.Helper()
	p := CreateParams{Name: fmt.Sprintf("Key %d", i), Subject: subjects[rng.IntN(len(subjects))]}
	if rng.IntN(2) == 0 {
		p.SecondsUntilExpiration = ptr(int64(1 + rng.IntN(20)))
	}
	return mustCreate(t, s, p).ID
}

// TestExpiryLeavesTheValidListing crosses an expiration with the clock: at
// the expiring millisecond the key leaves the default listing and its
// count, and shows with include_invalid; the listing has moved it to the
// invalid index. A new expiration brings it back.
func TestExpiryLeavesTheValidListing(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := e.store
		keep := mustCreate(t, s, CreateParams{Name: "keep", Subject: "s"})
		e.clock.Advance(time.Millisecond)
		exp := mustCreate(t, s, CreateParams{Name: "exp", Subject: "s", SecondsUntilExpiration: ptr[int64](10)})
		both := []string{exp.ID, keep.ID, "total=2"}
		for _, sub := range []string{"s", ""} {
			if got := listed(t, s, ListParams{Subject: sub}); !slices.Equal(got, both) {
				t.Fatalf("before the expiry (subject %q): %v, want %v", sub, got, both)
			}
		}
		e.clock.Advance(10*time.Second - time.Millisecond) // 1ms before
		if got := listed(t, s, ListParams{Subject: "s"}); !slices.Equal(got, both) {
			t.Fatalf("a millisecond before the expiry: %v, want %v", got, both)
		}
		e.clock.Advance(time.Millisecond) // expiration <= now: expired
		for _, sub := range []string{"s", ""} {
			if got, want := listed(t, s, ListParams{Subject: sub}), []string{keep.ID, "total=1"}; !slices.Equal(got, want) {
				t.Fatalf("at the expiry (subject %q): %v, want %v", sub, got, want)
			}
			if got := listed(t, s, ListParams{Subject: sub, IncludeInvalid: true}); !slices.Equal(got, both) {
				t.Fatalf("at the expiry with invalid keys (subject %q): %v, want %v", sub, got, both)
			}
		}
		for _, sc := range []scope{s.names.subjectScope("s"), s.names.allScope()} {
			if _, err := e.rdb.ZScore(ctx, sc.invalid, exp.ID).Result(); err != nil {
				t.Errorf("%s does not hold the expired key: %v", sc.invalid, err)
			}
			for _, k := range []string{sc.valid, sc.expiry} {
				if _, err := e.rdb.ZScore(ctx, k, exp.ID).Result(); !errors.Is(err, redis.Nil) {
					t.Errorf("%s still holds the expired key", k)
				}
			}
		}
		if _, err := s.Update(ctx, exp.ID, UpdateParams{SecondsUntilExpiration: ptr[int64](60)}); err != nil {
			t.Fatal(err)
		}
		if got := listed(t, s, ListParams{Subject: "s"}); !slices.Equal(got, both) {
			t.Fatalf("after a new expiration: %v, want %v", got, both)
		}
	})
}

// TestListCostsThePage lists a subject of 1,500 keys, every other one
// revoked and a hundred expired, and counts the Redis commands: a page
// costs the same few commands whatever the number of keys, with or
// without invalid keys, once the expired keys have been moved.
func TestListCostsThePage(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := e.store
		const n = 1500
		ids := make([]string, n)
		for i := range ids {
			p := CreateParams{Name: "k", Subject: "big"}
			if i%30 == 1 {
				p.SecondsUntilExpiration = ptr[int64](5)
			}
			ids[i] = mustCreate(t, s, p).ID
			e.clock.Advance(time.Millisecond)
		}
		for i := 0; i < n; i += 2 {
			if _, err := s.Revoke(ctx, ids[i], nil); err != nil {
				t.Fatal(err)
			}
		}
		e.clock.Advance(10 * time.Second)
		listed(t, s, ListParams{Subject: "big"}) // moves the expired keys
		for _, p := range []ListParams{
			{Subject: "big", Limit: 10, Offset: 300},
			{Subject: "big", Limit: 10, Offset: 300, IncludeInvalid: true},
			{Limit: 10, Offset: 600},
			{Limit: 10, Offset: 1200, IncludeInvalid: true},
		} {
			e.cmds.reset()
			got := listed(t, s, p)
			names, trips := e.cmds.snapshot()
			if want := expectedList(t, s, ids, p); !slices.Equal(got, want) {
				t.Fatalf("List(%+v)\n got %v\nwant %v", p, got, want)
			}
			// The journal, the script (a NOSCRIPT retry at most), the records.
			if len(names) > 14 || trips > 5 {
				t.Errorf("List(%+v) sent %d commands in %d round trips: %v; want the page's 10 records and at most 4 others", p, len(names), trips, names)
			}
		}
	})
}

// cutHook fails every command from the after-th on, as if the process had
// died before sending it.
type cutHook struct {
	mu    sync.Mutex
	after int // 0: never
	sent  int
}

var errCut = errors.New("cut: the process died here")

func (h *cutHook) cut(n int) { h.mu.Lock(); h.after, h.sent = n, 0; h.mu.Unlock() }

func (h *cutHook) pass() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent++
	return h.after == 0 || h.sent < h.after
}

// cutReached reports whether a command was refused.
func (h *cutHook) cutReached() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.after != 0 && h.sent >= h.after
}

func (h *cutHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cutHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if connectionSetup(cmd) || h.pass() {
			return next(ctx, cmd)
		}
		cmd.SetErr(errCut)
		return errCut
	}
}

func (h *cutHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && connectionSetup(cmds[0]) || h.pass() {
			return next(ctx, cmds)
		}
		for _, c := range cmds {
			c.SetErr(errCut)
		}
		return errCut
	}
}

// secondClient returns another client of e's Redis, closed at cleanup.
func secondClient(t *testing.T, e *env) *redis.Client {
	rdb := redis.NewClient(redistest.ClientOptions(e.rdb.Options().Addr))
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// TestChangesCutShort stops each kind of change before each of its Redis
// commands in turn, as a crash would, and lists through another store:
// at once, no listing shows a key otherwise than its record says (a
// revoked or deleted key is never listed as valid); once journalGrace has
// passed, every listing and count is exact again.
func TestChangesCutShort(t *testing.T) {
	changes := []struct {
		name   string
		run    func(ctx context.Context, s *Store, target string) error
		points int // more than the commands it sends; 10 when 0
	}{
		{"create", func(ctx context.Context, s *Store, _ string) error {
			_, err := s.Create(ctx, CreateParams{Name: "Key new", Subject: "user_a", SecondsUntilExpiration: ptr[int64](30)})
			return err
		}, 0},
		{"revoke", func(ctx context.Context, s *Store, target string) error {
			_, err := s.Revoke(ctx, target, nil)
			return err
		}, 0},
		{"delete", func(ctx context.Context, s *Store, target string) error { return s.Delete(ctx, target) }, 0},
		{"shorten expiry", func(ctx context.Context, s *Store, target string) error {
			_, err := s.Update(ctx, target, UpdateParams{SecondsUntilExpiration: ptr[int64](1)})
			return err
		}, 0},
		{"never expire", func(ctx context.Context, s *Store, target string) error {
			_, err := s.Update(ctx, target, UpdateParams{NeverExpires: true})
			return err
		}, 0},
		{"disable", func(ctx context.Context, s *Store, target string) error {
			_, err := s.Update(ctx, target, UpdateParams{Enabled: ptr(false)})
			return err
		}, 0},
		{"roll", func(ctx context.Context, s *Store, target string) error {
			_, err := s.Roll(ctx, target, time.Second)
			return err
		}, 18},
		{"roll, revoking", func(ctx context.Context, s *Store, target string) error {
			_, err := s.Roll(ctx, target, 0)
			return err
		}, 18},
		{"revoke all", func(ctx context.Context, s *Store, _ string) error {
			_, err := s.RevokeAll(ctx, "user_a", nil)
			return err
		}, 16},
		{"import", func(ctx context.Context, s *Store, _ string) error {
			sum := sha256.Sum256([]byte("sk_foreign_cut"))
			_, err := s.Import(ctx, ImportParams{CreateParams: CreateParams{Name: "Key imported", Subject: "user_a"},
				Hash: ImportHash{Algorithm: "sha256", Value: hex.EncodeToString(sum[:])}})
			return err
		}, 16},
	}
	backends(t, func(t *testing.T, e *env) {
		for _, c := range changes {
			t.Run(c.name, func(t *testing.T) {
				// Each cut point in parallel: a cut after the record makes
				// the dying store retry its publish for a second. A change
				// sends at most 7 commands.
				points := cmp.Or(c.points, 10)
				cut := make([]bool, points+1)
				t.Run("cuts", func(t *testing.T) {
					for at := 1; at <= points; at++ {
						t.Run(strconv.Itoa(at), func(t *testing.T) {
							t.Parallel()
							cut[at] = cutChange(t, e, at, c.run)
						})
					}
				})
				if cut[points] {
					t.Fatalf("the change was still being cut at its %d-th command: cut later", points)
				}
				if !cut[1] {
					t.Fatal("the first cut did not fall inside the change")
				}
			})
		}
	})
}

// cutChange runs change in a store of its own whose commands fail from the
// at-th on, in a namespace of its own, and checks the listings of another
// store. It reports whether the cut fell inside the change.
func cutChange(t *testing.T, e *env, at int, change func(context.Context, *Store, string) error) bool {
	t.Helper()
	ctx := context.Background()
	ns := "cut" + strconv.Itoa(at)
	clock := testclock.New()
	check := newEnv(t, secondClient(t, e), func(o *Options) { o.Namespace, o.Now = ns, clock.Now })
	subjects := []string{"user_a", "user_b"}
	var ids []string
	for i := range 6 {
		p := CreateParams{Name: fmt.Sprintf("Key %d", i), Subject: subjects[i%2], SecondsUntilExpiration: ptr[int64](30)}
		ids = append(ids, mustCreate(t, check.store, p).ID)
		clock.Advance(time.Millisecond)
	}
	target := ids[2]

	hook := &cutHook{}
	rdb := secondClient(t, e)
	rdb.AddHook(hook)
	dying := newEnv(t, rdb, func(o *Options) { o.Namespace, o.Now = ns, clock.Now })
	hook.cut(at)
	err := change(ctx, dying.store, target)
	cut := hook.cutReached()
	if !cut && err != nil {
		t.Fatalf("cut at %d: the change failed without being cut: %v", at, err)
	}
	ids = createdIDs(t, check, ns)

	// At once: what a listing shows of a key is what its record says.
	for _, p := range fewListParams("user_a") {
		l, err := check.store.List(ctx, p)
		if err != nil {
			t.Fatalf("cut at %d: List(%+v): %v", at, p, err)
		}
		for _, k := range l.Data {
			rec, err := check.store.Get(ctx, k.ID)
			if err != nil || !p.IncludeInvalid && (rec.Revoked || rec.Expired || !rec.Enabled) {
				t.Fatalf("cut at %d: List(%+v) shows %s, whose record is %+v (%v)", at, p, k.ID, rec, err)
			}
		}
	}
	// After the grace: exact.
	clock.Advance(journalGrace + time.Millisecond)
	checkListingsOf(t, check.store, ids, fewListParams("user_a"))
	if n, _ := check.rdb.ZCard(ctx, check.store.names.journal()).Result(); n != 0 {
		t.Fatalf("cut at %d: the journal still holds %d entries after a listing", at, n)
	}
	return cut
}

// createdIDs returns the IDs of the records in namespace ns.
func createdIDs(t *testing.T, e *env, ns string) []string {
	t.Helper()
	var ids []string
	iter := e.rdb.Scan(context.Background(), 0, ns+":key:*", 100).Iterator()
	for iter.Next(context.Background()) {
		ids = append(ids, strings.TrimPrefix(iter.Val(), ns+":key:"))
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}
