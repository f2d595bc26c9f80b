package keystore

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/keygate/keygate/internal/syncbuf"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
)

// newVerifier returns a verifier over e's store, closed at cleanup.
func newVerifier(t testing.TB, e *env, opts VerifierOptions) *Verifier {
	t.Helper()
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	v, err := NewVerifier(e.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// waitLive waits, a bounded time, for the verifier's subscription to be
// confirmed, registered and proven: a real asynchronous event.
func waitLive(t testing.TB, v *Verifier) {
	t.Helper()
	waitFor(t, "the verifier's subscription to be live", func() bool { return v.live.at(v.store.now()) })
}

// waitSession waits for the verifier's n-th subscription to be live.
func waitSession(t testing.TB, v *Verifier, n uint64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("subscription #%d to be live", n), func() bool {
		return v.sessions.Load() >= n && v.live.at(v.store.now())
	})
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, what, 10*time.Second, cond)
}

// cached reports whether the verifier's cache would answer for id now.
func cached(v *Verifier, id string) bool {
	kid := parseKeyID(id[len(idPrefix):])
	return v.cache.get(&kid, v.store.now()) != nil
}

// peer returns an env with its own store and client on e's Redis: another
// process, as far as keygate can tell.
func peer(t testing.TB, e *env, opts ...func(*Options)) *env {
	t.Helper()
	rdb := redis.NewClient(redistest.ClientOptions(e.rdb.Options().Addr))
	t.Cleanup(func() { rdb.Close() })
	return newEnv(t, rdb, opts...)
}

// recordWaits makes s report each wait for acknowledgements.
func recordWaits(s *Store) func() (waits []time.Duration, missing [][]string) {
	var mu sync.Mutex
	var ws []time.Duration
	var ms [][]string
	s.waited = func(d time.Duration, m []string) {
		mu.Lock()
		ws = append(ws, d)
		ms = append(ms, m)
		mu.Unlock()
	}
	return func() ([]time.Duration, [][]string) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(ws), slices.Clone(ms)
	}
}

// commands counts the commands sent for verifications.
func commands(c *commandCounter) int {
	names, _ := c.snapshot()
	return len(names)
}

func TestVerifierOutcomes(t *testing.T) {
	for _, mode := range []struct {
		name string
		ttl  time.Duration
	}{{"cached", 0}, {"uncached", -1}} {
		t.Run(mode.name, func(t *testing.T) {
			_, rdb := redistest.Mini(t)
			e := newEnv(t, rdb)
			v := newVerifier(t, e, VerifierOptions{CacheTTL: mode.ttl})
			if mode.ttl >= 0 {
				waitLive(t, v)
			}
			ctx := context.Background()
			k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s", Scopes: []string{"read", "write"}, SecondsUntilExpiration: ptr[int64](3600)})
			revoked := mustCreate(t, e.store, CreateParams{Name: "r", Subject: "s"})
			if _, err := e.store.Revoke(ctx, revoked.ID, nil); err != nil {
				t.Fatal(err)
			}
			expiring := mustCreate(t, e.store, CreateParams{Name: "x", Subject: "s", SecondsUntilExpiration: ptr[int64](1)})
			// Every key is verified once before the clock moves, so that the
			// cached mode answers the expired case from its cache.
			for _, s := range []string{k.Secret, revoked.Secret, expiring.Secret} {
				v.Verify(ctx, s, SourceAPI)
			}
			e.clock.Advance(time.Second)

			for _, tc := range []struct {
				name    string
				secret  string
				scopes  []string
				want    error
				outcome string
				key     bool // the key is returned along with the outcome
				redis   bool // may send a command to Redis
			}{
				{"valid", k.Secret, nil, nil, "valid", true, true},
				{"valid with scopes", k.Secret, []string{"read", "write"}, nil, "valid", true, true},
				{"insufficient scope", k.Secret, []string{"read", "admin"}, ErrInsufficientScope, "insufficient_scope", true, true},
				{"missing", "", nil, ErrMissing, "missing", false, false},
				{"garbage", "hello", nil, ErrMalformed, "malformed", false, false},
				{"bad checksum", k.Secret[:len(k.Secret)-1] + flip(k.Secret[len(k.Secret)-1]), nil, ErrMalformed, "malformed", false, false},
				{"other prefix", "sk_" + k.Secret[3:], nil, ErrMalformed, "malformed", false, false},
				{"unknown id", forgeSecret(t, "ak_"+strings.Repeat("0", 32), k.Secret), nil, ErrNotFound, "not_found", false, true},
				{"wrong digest", forgeSecret(t, k.ID, revoked.Secret), nil, ErrNotFound, "not_found", false, true},
				{"revoked", revoked.Secret, nil, ErrRevoked, "revoked", true, true},
				{"expired", expiring.Secret, nil, ErrExpired, "expired", true, true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					e.cmds.reset()
					got, err := v.Verify(ctx, tc.secret, SourceMiddleware, tc.scopes...)
					if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
						t.Fatalf("Verify = %v, want %v", err, tc.want)
					}
					if o := Outcome(err); o != tc.outcome {
						t.Errorf("Outcome = %s, want %s", o, tc.outcome)
					}
					if (got != nil) != tc.key {
						t.Errorf("Verify returned key %v, want one: %v", got, tc.key)
					}
					if n := commands(e.cmds); !tc.redis && n != 0 {
						t.Errorf("a %s secret sent %d commands to Redis", tc.name, n)
					}
					if tc.want == ErrInsufficientScope {
						var se *ScopeError
						if !errors.As(err, &se) || !slices.Equal(se.Required, tc.scopes) {
							t.Errorf("Verify = %#v, want a ScopeError requiring %v", err, tc.scopes)
						}
					}
					if got != nil && got.Secret != "" {
						t.Error("Verify returned the secret")
					}
					if tc.name == "expired" && !got.Expired {
						t.Error("an expired key is returned with expired=false")
					}
				})
			}
		})
	}
}

func TestCacheHitSendsNoCommands(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		v := newVerifier(t, e, VerifierOptions{})
		waitLive(t, v)
		k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s", Scopes: []string{"read"}})
		other := mustCreate(t, e.store, CreateParams{Name: "other", Subject: "s"})
		e.cmds.reset()
		if _, err := v.Verify(ctx, k.Secret, SourceSidecar); err != nil {
			t.Fatal(err)
		}
		if names, _ := e.cmds.snapshot(); !slices.Equal(names, []string{"hgetall"}) {
			t.Fatalf("first verification sent %v, want one HGETALL", names)
		}
		e.cmds.reset()
		for i := 0; i < 100; i++ {
			if _, err := v.Verify(ctx, k.Secret, SourceSidecar, "read"); err != nil {
				t.Fatal(err)
			}
		}
		// A hit still compares the digest: another secret for the same ID.
		if _, err := v.Verify(ctx, forgeSecret(t, k.ID, other.Secret), SourceSidecar); !errors.Is(err, ErrNotFound) {
			t.Fatalf("forged secret for a cached ID = %v, want ErrNotFound", err)
		}
		if names, _ := e.cmds.snapshot(); len(names) != 0 {
			t.Fatalf("101 cached verifications sent %v", names)
		}
		// A hit still records the use.
		e.clock.Advance(500 * time.Millisecond)
		got, err := v.Verify(ctx, k.Secret, SourceSidecar)
		if err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now().UnixMilli()
		if got.LastUsedAt == nil || *got.LastUsedAt != now {
			t.Fatalf("last_used_at = %v, want %d", got.LastUsedAt, now)
		}
		if err := e.store.FlushLastUsed(ctx); err != nil {
			t.Fatal(err)
		}
		if g, _ := e.store.Get(ctx, k.ID); g.LastUsedAt == nil || *g.LastUsedAt != now {
			t.Fatalf("stored last_used_at = %v, want %d", g.LastUsedAt, now)
		}
	})
}

func TestCacheTTLAndExpiry(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	// A subscription proof that cannot go stale in this test, so that only
	// the TTL and the expiration decide.
	v := newVerifier(t, e, VerifierOptions{CacheTTL: 30 * time.Second, SubscriptionStale: time.Hour})
	waitLive(t, v)
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	short := mustCreate(t, e.store, CreateParams{Name: "short", Subject: "s", SecondsUntilExpiration: ptr[int64](10)})
	for _, s := range []string{k.Secret, short.Secret} {
		if _, err := v.Verify(ctx, s, SourceAPI); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		advance  time.Duration
		secret   string
		want     error
		commands int
	}{
		{10*time.Second - time.Millisecond, short.Secret, nil, 0},
		{time.Millisecond, short.Secret, ErrExpired, 0}, // expiry is checked on a hit
		{20*time.Second - time.Millisecond, k.Secret, nil, 0},
		{time.Millisecond, k.Secret, nil, 1}, // 30s old: read again
		{0, k.Secret, nil, 0},
	} {
		e.clock.Advance(step.advance)
		e.cmds.reset()
		_, err := v.Verify(ctx, step.secret, SourceAPI)
		if !errors.Is(err, step.want) || step.want == nil && err != nil {
			t.Fatalf("at +%v: Verify = %v, want %v", step.advance, err, step.want)
		}
		if n := commands(e.cmds); n != step.commands {
			t.Fatalf("at +%v: Verify sent %d commands, want %d", step.advance, n, step.commands)
		}
	}
}

func TestCacheDisabled(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	v := newVerifier(t, e, VerifierOptions{CacheTTL: -1})
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	e.cmds.reset()
	for i := 0; i < 3; i++ {
		if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
			t.Fatal(err)
		}
	}
	if n := commands(e.cmds); n != 3 {
		t.Fatalf("3 verifications without a cache sent %d commands, want 3", n)
	}
	if err := v.Ready(ctx); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	// Without a cache there is nothing to invalidate: no subscription, no
	// registration for revokers to wait on.
	subs, _ := rdb.PubSubNumSub(ctx, e.store.names.invalidate()).Result()
	if subs[e.store.names.invalidate()] != 0 {
		t.Fatalf("a verifier without a cache subscribed")
	}
	if n, _ := rdb.ZCard(ctx, e.store.names.verifiers()).Result(); n != 0 {
		t.Fatalf("a verifier without a cache registered")
	}
}

func TestCacheBounded(t *testing.T) {
	t.Run("verifier", func(t *testing.T) {
		_, rdb := redistest.Mini(t)
		e := newEnv(t, rdb)
		ctx := context.Background()
		reg := prometheus.NewRegistry()
		v := newVerifier(t, e, VerifierOptions{CacheSize: 8, Registerer: reg})
		waitLive(t, v)
		var keys []*APIKey
		for i := 0; i < 20; i++ {
			k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
			keys = append(keys, k)
			if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
				t.Fatal(err)
			}
		}
		if n := v.cache.len(); n != 8 {
			t.Fatalf("cache of 8 holds %d keys", n)
		}
		if g := testkit.MetricValue(t, reg, "keygate_cache_entries", nil); g != 8 {
			t.Fatalf("keygate_cache_entries = %v, want 8", g)
		}
		for _, k := range keys {
			if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
				t.Fatalf("evicted key: %v", err)
			}
		}
	})
	t.Run("sharded", func(t *testing.T) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "entries"})
		c := newCache(1024, 64<<20, time.Minute, g)
		if len(c.shards) < 2 {
			t.Fatalf("a cache of 1024 has %d shard", len(c.shards))
		}
		for i := 0; i < 5000; i++ {
			var id keyID
			id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
			c.insert(&id, &cacheEntry{}, c.generation(&id))
		}
		if n := c.len(); n > 1024 || n < 1024-len(c.shards) {
			t.Fatalf("a cache of 1024 holds %d keys", n)
		}
	})
}

func TestCacheGeneration(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "entries"})
	c := newCache(100, 64<<20, time.Minute, g)
	id := parseKeyID(strings.Repeat("ab", 16))
	for _, tc := range []struct {
		name   string
		during func()
		want   bool
	}{
		{"nothing", func() {}, true},
		{"invalidated", func() { c.invalidate(&id) }, false},
		{"flushed", c.flush, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.flush()
			gen := c.generation(&id)
			tc.during()
			t0 := time.Unix(1, 0)
			if got := c.insert(&id, &cacheEntry{loaded: t0}, gen); got != tc.want {
				t.Fatalf("insert after %s = %v, want %v", tc.name, got, tc.want)
			}
			if got := c.get(&id, t0.Add(time.Second)) != nil; got != tc.want {
				t.Fatalf("entry present = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLiveness walks the state that decides whether the cache may answer.
// TestLiveness walks the verifier's liveness through heartbeats, PINGs and
// invalidations: the cache answers only after a heartbeat's PING came back
// with every invalidation up to the heartbeat's sequence received, and only
// for hold past the heartbeat's sending; each way of missing an
// invalidation empties the cache.
func TestLiveness(t *testing.T) {
	t0 := time.UnixMilli(1_750_000_000_000)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const hold = 1500 * time.Millisecond
	var flushes []string
	l := liveness{hold: hold, flush: func(r string) { flushes = append(flushes, r) }}
	l.reset(t0)
	var ping uint64
	// beatAt runs one heartbeat sent at d, whose PING is answered.
	beatAt := func(d time.Duration, b beat) {
		ping++
		seq, known, _ := l.sequence()
		l.expect(round{ping: ping, sent: at(d), seqAtSend: seq, knewSeq: known, beat: b})
		l.pong(ping, at(d))
	}
	steps := []struct {
		name  string
		do    func()
		now   time.Duration
		want  bool
		flush string // the reason of a flush the step causes, if any
	}{
		{"new", func() {}, 0, false, ""},
		{"answered before confirmation", func() { beatAt(0, beat{added: true, seq: 5}) }, 0, false, ""},
		{"first heartbeat", func() { l.confirm(t0); beatAt(0, beat{added: true, seq: 5}) }, 0, true, flushLapse},
		{"held", func() {}, hold - time.Millisecond, true, ""},
		{"not past hold", func() {}, hold, false, ""},
		{"next heartbeat, in sequence", func() { l.message(6, at(hold)); beatAt(hold, beat{seq: 6}) }, hold, true, ""},
		{"a PING without a heartbeat proves nothing more", func() { ping++; l.pong(ping, at(2*hold)) }, 2 * hold, false, ""},
		{"a gap between messages", func() { l.message(8, at(2*hold)) }, 2 * hold, false, flushGap},
		{"a heartbeat ahead of the messages", func() { beatAt(2*hold, beat{seq: 9}) }, 2 * hold, true, flushGap},
		{"in step again", func() { l.message(10, at(2*hold)); beatAt(2*hold, beat{seq: 10}) }, 2 * hold, true, ""},
		{"the sequence went back", func() { beatAt(3*hold, beat{seq: 4}) }, 3 * hold, true, flushSequence},
		{"and goes on from there", func() { l.message(5, at(3*hold)); beatAt(3*hold, beat{seq: 5}) }, 3 * hold, true, ""},
		{"an unpublished change", func() { beatAt(4*hold, beat{seq: 5, lost: []string{"n42"}}) }, 4 * hold, true, flushUnpublished},
		{"seen once only", func() { beatAt(4*hold, beat{seq: 5, lost: []string{"n42"}}) }, 4 * hold, true, ""},
		{"another, even if older", func() { beatAt(4*hold, beat{seq: 5, lost: []string{"n41", "n42"}}) }, 4 * hold, true, flushUnpublished},
		{"registration lost behind its back", func() { beatAt(5*hold, beat{added: true, seq: 5, lost: []string{"n42"}}) }, 5 * hold, true, flushLapse},
		{"a late PONG extends from its heartbeat, not from now", func() {
			ping++
			l.expect(round{ping: ping, sent: at(6 * hold), seqAtSend: 5, knewSeq: true, beat: beat{seq: 5}})
			l.pong(ping, at(7*hold))
		}, 7 * hold, false, ""},
		{"session over", func() { l.reset(at(8 * hold)) }, 8 * hold, false, ""},
	}
	for _, st := range steps {
		flushes = flushes[:0]
		st.do()
		if got := l.at(at(st.now)); got != st.want {
			t.Fatalf("%s: live = %v, want %v", st.name, got, st.want)
		}
		want := []string{}
		if st.flush != "" {
			want = []string{st.flush}
		}
		if !slices.Equal(append([]string{}, flushes...), want) {
			t.Fatalf("%s: flushes %v, want %v", st.name, flushes, want)
		}
	}
}

func TestUnknownIDsAreNotCached(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	v := newVerifier(t, e, VerifierOptions{})
	waitLive(t, v)
	donor := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	unknown := forgeSecret(t, "ak_"+strings.Repeat("7", 32), donor.Secret)
	e.cmds.reset()
	for i := 0; i < 2; i++ {
		if _, err := v.Verify(ctx, unknown, SourceAPI); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Verify(unknown) = %v", err)
		}
	}
	if n := commands(e.cmds); n != 2 {
		t.Fatalf("two verifications of an unknown ID sent %d commands, want 2 (no negative cache)", n)
	}
	// So a key created afterwards verifies at once.
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
		t.Fatalf("Verify(new key) = %v", err)
	}
}

// TestChangeElsewhereIsInstant revokes, updates and deletes through store A
// (its own client, as another process would) a key that verifier B has
// cached, and checks B's very next answer.
func TestChangeElsewhereIsInstant(t *testing.T) {
	backends(t, func(t *testing.T, b *env) {
		ctx := context.Background()
		a := peer(t, b)
		waits := recordWaits(a.store)
		reg := prometheus.NewRegistry()
		v := newVerifier(t, b, VerifierOptions{Registerer: reg})
		waitLive(t, v)
		for i, tc := range []struct {
			name   string
			change func(id string) error
			scopes []string
			want   error
		}{
			{"revoke", func(id string) error { _, err := a.store.Revoke(ctx, id, ptr("leaked")); return err }, nil, ErrRevoked},
			{"delete", func(id string) error { return a.store.Delete(ctx, id) }, nil, ErrNotFound},
			{"update scopes", func(id string) error {
				_, err := a.store.Update(ctx, id, UpdateParams{Scopes: &[]string{"write"}})
				return err
			}, []string{"read"}, ErrInsufficientScope},
			{"update expiration", func(id string) error {
				_, err := a.store.Update(ctx, id, UpdateParams{SecondsUntilExpiration: ptr[int64](1)})
				if err == nil {
					b.clock.Advance(time.Second) // both clocks started together
				}
				return err
			}, nil, ErrExpired},
		} {
			t.Run(tc.name, func(t *testing.T) {
				k := mustCreate(t, a.store, CreateParams{Name: "n", Subject: "s", Scopes: []string{"read"}})
				for j := 0; j < 2; j++ {
					if _, err := v.Verify(ctx, k.Secret, SourceSidecar, tc.scopes...); err != nil {
						t.Fatal(err)
					}
				}
				if !cached(v, k.ID) {
					t.Fatal("precondition: B has not cached the key")
				}
				if err := tc.change(k.ID); err != nil {
					t.Fatal(err)
				}
				if _, err := v.Verify(ctx, k.Secret, SourceSidecar, tc.scopes...); !errors.Is(err, tc.want) {
					t.Fatalf("B's first answer after %s returned = %v, want %v", tc.name, err, tc.want)
				}
				if got := testkit.MetricValue(t, reg, "keygate_cache_invalidations_total", nil); got != float64(i+1) {
					t.Errorf("keygate_cache_invalidations_total = %v, want %d", got, i+1)
				}
				_, missing := waits()
				if len(missing) != i+1 || len(missing[i]) != 0 {
					t.Errorf("the change did not wait for B's acknowledgement: %v", missing)
				}
			})
		}
	})
}

// TestFillRacingInvalidation forces the interleaving where B loads a record,
// the key is revoked and the invalidation handled, and only then B caches
// what it loaded.
func TestFillRacingInvalidation(t *testing.T) {
	_, rdb := redistest.Mini(t)
	b := newEnv(t, rdb)
	a := peer(t, b)
	waits := recordWaits(a.store)
	ctx := context.Background()
	v := newVerifier(t, b, VerifierOptions{})
	waitLive(t, v)
	k := mustCreate(t, a.store, CreateParams{Name: "n", Subject: "s"})
	var once sync.Once
	v.afterLoad = func() {
		once.Do(func() {
			if _, err := a.store.Revoke(ctx, k.ID, nil); err != nil {
				t.Error(err)
			}
		})
	}
	// This call began before the revoke: it may answer valid.
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
		t.Fatalf("Verify racing the revoke = %v", err)
	}
	if _, missing := waits(); len(missing) != 1 || len(missing[0]) != 0 {
		t.Fatalf("the revoke did not wait for B's acknowledgement: %v", missing)
	}
	v.afterLoad = nil
	if cached(v, k.ID) {
		t.Fatal("a load older than the invalidation was cached")
	}
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify after the revoke returned = %v, want ErrRevoked", err)
	}
}

// revokeBehindBack revokes a key without publishing anything: the change a
// verifier misses while its subscription is down.
func revokeBehindBack(t *testing.T, rdb *redis.Client, s *Store, id string) {
	t.Helper()
	if err := rdb.HSet(context.Background(), s.names.record(id), fRevoked, "1").Err(); err != nil {
		t.Fatal(err)
	}
}

func TestSubscriptionLostMiniredis(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	v := newVerifier(t, e, VerifierOptions{})
	waitLive(t, v)
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	for i := 0; i < 2; i++ {
		if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
			t.Fatal(err)
		}
	}
	if !cached(v, k.ID) {
		t.Fatal("precondition: key not cached")
	}

	mr.Close()
	// However late the verifier notices, its proof is stale once the
	// clock has moved by SubscriptionStale.
	e.clock.Advance(2 * time.Second)
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Verify with Redis down = %v, want ErrUnavailable", err)
	}
	if err := v.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready with Redis down = %v", err)
	}

	// The revocation it missed while down.
	mr.HSet(e.store.names.record(k.ID), fRevoked, "1")
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitSession(t, v, 2)
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify after resubscription = %v, want ErrRevoked (cache dropped)", err)
	}
	if err := v.Ready(ctx); err != nil {
		t.Fatalf("Ready after resubscription = %v", err)
	}
}

func TestSubscriptionKilled(t *testing.T) {
	rdb := redistest.Server(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	v := newVerifier(t, e, VerifierOptions{})
	waitLive(t, v)
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	v.Verify(ctx, k.Secret, SourceAPI)
	revokeBehindBack(t, rdb, e.store, k.ID)
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
		t.Fatalf("precondition: the cache does not answer: %v", err)
	}
	n := v.sessions.Load()
	killed, err := rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
	if err != nil || killed < 1 {
		t.Fatalf("CLIENT KILL TYPE pubsub = %d, %v", killed, err)
	}
	waitSession(t, v, n+1)
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify after resubscription = %v, want ErrRevoked (cache dropped)", err)
	}
}

// TestSubscriptionHangs stops forwarding on B's subscription connection
// without closing it: revokes wait InvalidationWait for B and name it, and B
// stops answering from its cache once its proof is SubscriptionStale old,
// then reconnects.
func TestSubscriptionHangs(t *testing.T) {
	srv := redistest.Start(t)
	proxy := newHangProxy(t, srv.Addr)
	direct := redis.NewClient(redistest.ClientOptions(srv.Addr))
	t.Cleanup(func() { direct.Close() })
	var logs syncbuf.Buffer
	a := newEnv(t, direct, func(o *Options) { o.Logger = testkit.LogTo(&logs) })
	waits := recordWaits(a.store)
	viaProxy := redis.NewClient(redistest.ClientOptions(proxy.Addr))
	t.Cleanup(func() { viaProxy.Close() })
	b := newEnv(t, viaProxy)
	ctx := context.Background()
	v := newVerifier(t, b, VerifierOptions{})
	waitLive(t, v)
	k := mustCreate(t, a.store, CreateParams{Name: "n", Subject: "s"})
	v.Verify(ctx, k.Secret, SourceSidecar)
	if !cached(v, k.ID) {
		t.Fatal("precondition: key not cached")
	}

	if n := proxy.FreezeSubscribers(); n != 1 {
		t.Fatalf("froze %d subscriber connections, want 1", n)
	}
	n := v.sessions.Load()
	if _, err := a.store.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, missing := waits(); len(missing) != 1 || !slices.Equal(missing[0], []string{v.InstanceID()}) {
		t.Fatalf("instances that did not acknowledge = %v, want [%s]", missing, v.InstanceID())
	}
	if !strings.Contains(logs.String(), v.InstanceID()) {
		t.Fatalf("the revoker's log does not name the silent instance:\n%s", logs.String())
	}
	// The hazard the staleness bound exists for: the invalidation never
	// arrived, and by B's clock its last proof is still fresh.
	if _, err := v.Verify(ctx, k.Secret, SourceSidecar); err != nil {
		t.Fatalf("precondition: the hung subscription was noticed without the clock: %v", err)
	}
	b.clock.Advance(2*time.Second + time.Millisecond)
	if _, err := v.Verify(ctx, k.Secret, SourceSidecar); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify with a stale subscription = %v, want ErrRevoked from Redis", err)
	}
	waitSession(t, v, n+1)
	if _, err := v.Verify(ctx, k.Secret, SourceSidecar); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Verify after reconnecting = %v, want ErrRevoked", err)
	}
}

func TestRevokeWaitsOnlyForRegisteredInstances(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	var logs syncbuf.Buffer
	e := newEnv(t, rdb, func(o *Options) { o.Logger = testkit.LogTo(&logs); o.InvalidationWait = 50 * time.Millisecond })
	waits := recordWaits(e.store)
	ctx := context.Background()
	now := time.Now()
	mr.ZAdd(e.store.names.verifiers(), float64(now.Add(300*time.Millisecond).UnixMilli()), "ghost")
	mr.ZAdd(e.store.names.verifiers(), float64(now.Add(-time.Second).UnixMilli()), "departed")

	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	if _, err := e.store.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, missing := waits(); len(missing) != 1 || !slices.Equal(missing[0], []string{"ghost"}) {
		t.Fatalf("unacknowledged = %v, want [[ghost]]", missing)
	}
	if l := logs.String(); !strings.Contains(l, "ghost") || strings.Contains(l, "departed") {
		t.Fatalf("log should name ghost, and only ghost:\n%s", l)
	}

	// A negative wait publishes without waiting.
	e.store.invalidationWait.Store(-1)
	if err := e.store.Delete(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	// No registered verifier: nothing to wait for.
	e.store.invalidationWait.Store(int64(time.Minute))
	mr.ZRem(e.store.names.verifiers(), "ghost")
	k2 := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	if _, err := e.store.Revoke(ctx, k2.ID, nil); err != nil {
		t.Fatal(err)
	}
	if ws, _ := waits(); len(ws) != 1 {
		t.Fatalf("%d invalidations waited, want only the first", len(ws))
	}
}

func TestCloseDeregisters(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	waits := recordWaits(e.store)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	v := newVerifier(t, e, VerifierOptions{Registerer: reg})
	waitLive(t, v)
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	v.Verify(ctx, k.Secret, SourceAPI)
	if _, err := rdb.ZScore(ctx, e.store.names.verifiers(), v.InstanceID()).Result(); err != nil {
		t.Fatalf("live verifier not registered: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v.Close()
	if _, err := rdb.ZScore(ctx, e.store.names.verifiers(), v.InstanceID()).Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("closed verifier still registered: %v", err)
	}
	if g := testkit.MetricValue(t, reg, "keygate_cache_entries", nil); g != 0 {
		t.Fatalf("keygate_cache_entries after Close = %v", g)
	}
	if _, err := e.store.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatal(err)
	}
	if ws, _ := waits(); len(ws) != 0 {
		t.Fatal("a revoke waited for a closed verifier")
	}
}

func TestReady(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	v := newVerifier(t, e, VerifierOptions{SubscriptionStale: time.Hour})
	waitLive(t, v)
	if err := v.Ready(ctx); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	// Redis answers, but the proof of the subscription is too old (until
	// the verifier proves it again, within a second of real time).
	e.clock.Advance(time.Hour)
	if err := v.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready with a stale subscription = %v, want ErrUnavailable", err)
	}
	waitLive(t, v)
	if err := v.Ready(ctx); err != nil {
		t.Fatalf("Ready once proven again = %v", err)
	}
	mr.Close()
	if err := v.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready with Redis down = %v, want ErrUnavailable", err)
	}
}

// TestCacheKeepsNoSecret checks that nothing the verifier keeps points into
// the caller's secret.
func TestCacheKeepsNoSecret(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	v := newVerifier(t, e, VerifierOptions{})
	waitLive(t, v)
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	secret := string([]byte(k.Secret)) // memory of its own
	if _, err := v.Verify(context.Background(), secret, SourceAPI); err != nil {
		t.Fatal(err)
	}
	lo := uintptr(unsafe.Pointer(unsafe.StringData(secret)))
	inSecret := func(s string) bool {
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		return len(s) > 0 && p >= lo && p < lo+uintptr(len(secret))
	}
	kid := parseKeyID(k.ID[3:])
	ent := v.cache.get(&kid, v.store.now())
	if ent == nil {
		t.Fatal("precondition: key not cached")
	}
	kept := []string{ent.key.ID, ent.key.Name, ent.key.Subject, ent.digest}
	for i := range e.store.lastUsed.stripes {
		sh := &e.store.lastUsed.stripes[i]
		sh.mu.Lock()
		for id := range sh.pending {
			kept = append(kept, id)
		}
		sh.mu.Unlock()
	}
	for _, s := range kept {
		if inSecret(s) {
			t.Fatalf("the verifier keeps %q, a piece of the caller's secret", s)
		}
	}
}

func TestMetrics(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	reg := prometheus.NewPedanticRegistry()
	e := newEnv(t, rdb, func(o *Options) { o.Registerer = reg })
	ctx := context.Background()
	v := newVerifier(t, e, VerifierOptions{Registerer: reg})
	// A second store and verifier on the same registry share the series.
	other := peer(t, e, func(o *Options) { o.Registerer = reg })
	waitLive(t, newVerifier(t, other, VerifierOptions{Registerer: reg}))
	waitLive(t, v)
	k := mustCreate(t, e.store, CreateParams{Name: "secret-name", Subject: "user_secret_subject"})
	v.Verify(ctx, k.Secret, SourceAPI)
	v.Verify(ctx, k.Secret, SourceAPI)
	v.Verify(ctx, "garbage", SourceMiddleware)
	v.Verify(ctx, k.Secret, Source("custom"))
	if err := e.store.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if g := testkit.MetricValue(t, reg, "keygate_cache_entries", nil); g != 1 {
		t.Errorf("keygate_cache_entries = %v, want 1", g)
	}
	if _, err := other.store.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatal(err)
	}
	mr.Close()
	v.Verify(ctx, k.Secret, SourceForwardAuth)

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"keygate_verifications_total", map[string]string{"result": "valid", "source": "api"}, 2},
		{"keygate_verifications_total", map[string]string{"result": "malformed", "source": "middleware"}, 1},
		{"keygate_verifications_total", map[string]string{"result": "valid", "source": "custom"}, 1},
		{"keygate_verifications_total", map[string]string{"result": "unavailable", "source": "forward_auth"}, 1},
		{"keygate_cache_invalidations_total", nil, 2}, // one per verifier
		{"keygate_last_used_flushes_total", nil, 1},
		{"keygate_store_errors_total", map[string]string{"op": "verify"}, 1},
	} {
		if got := testkit.MetricValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var hist *dto.MetricFamily
	for _, mf := range mfs {
		if mf.GetName() == "keygate_verification_duration_seconds" {
			hist = mf
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, bad := range []string{k.ID, k.ID[3:], k.Subject, k.Name, k.Secret[3:20]} {
					if strings.Contains(l.GetValue(), bad) {
						t.Errorf("%s has a label %s=%q", mf.GetName(), l.GetName(), l.GetValue())
					}
				}
			}
		}
	}
	if hist == nil {
		t.Fatal("keygate_verification_duration_seconds missing")
	}
	counts := map[string]uint64{}
	for _, m := range hist.GetMetric() {
		counts[m.GetLabel()[0].GetValue()] = m.GetHistogram().GetSampleCount()
	}
	if counts["hit"] != 2 || counts["miss"] != 3 {
		t.Errorf("verification durations by cache = %v, want hit 2, miss 3", counts)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

// TestTwoInstancesUnderLoad runs two verifiers, each with its own store and
// client as two sidecars would have, on one real redis-server under
// concurrent load, and revokes the key they both cached through a third
// store, round after round. No request that starts after Revoke returned
// may be accepted by either. The invalidation wait is long, so that a revoke
// that gives up waiting means a lost acknowledgement, not a slow machine.
func TestTwoInstancesUnderLoad(t *testing.T) {
	const (
		rounds    = 200
		workers   = 2  // per instance
		burst     = 32 // verifications between short pauses, as requests come
		afterEach = 20 // requests per instance that start after each revoke
	)
	srv := redistest.Start(t)
	store := func() *Store {
		rdb := redis.NewClient(redistest.ClientOptions(srv.Addr))
		s, err := New(rdb, Options{LastUsedFlush: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(); rdb.Close() })
		return s
	}
	admin := store()
	admin.invalidationWait.Store(int64(10 * time.Second))
	waits := recordWaits(admin)
	var instances [2]*Verifier
	for i := range instances {
		v, err := NewVerifier(store(), VerifierOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		waitLive(t, v)
		instances[i] = v
	}

	type round struct {
		secret  string
		revoked atomic.Bool // set once Revoke has returned
		after   [2]atomic.Int64
	}
	var (
		cur        atomic.Pointer[round]
		accepted   atomic.Int64 // after the revoke: the failures this test is about
		unexpected atomic.Value
		total      atomic.Int64
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	ctx := context.Background()
	for i, v := range instances {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 1; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					if n%burst == 0 {
						time.Sleep(50 * time.Microsecond)
					}
					r := cur.Load()
					if r == nil {
						time.Sleep(time.Millisecond)
						continue
					}
					startedAfter := r.revoked.Load()
					_, err := v.Verify(ctx, r.secret, SourceSidecar)
					total.Add(1)
					if !startedAfter {
						continue
					}
					r.after[i].Add(1)
					switch {
					case err == nil:
						accepted.Add(1)
					case !errors.Is(err, ErrRevoked):
						unexpected.Store(err.Error())
					}
				}
			}()
		}
	}
	var revokeCalls []time.Duration
	for n := 0; n < rounds && !t.Failed(); n++ {
		k, err := admin.Create(ctx, CreateParams{Name: "load", Subject: "s"})
		if err != nil {
			t.Fatal(err)
		}
		r := &round{secret: k.Secret}
		cur.Store(r)
		for _, v := range instances {
			waitFor(t, "both instances to cache the key", func() bool { return cached(v, k.ID) })
		}
		start := time.Now()
		if _, err := admin.Revoke(ctx, k.ID, nil); err != nil {
			t.Fatal(err)
		}
		revokeCalls = append(revokeCalls, time.Since(start))
		r.revoked.Store(true)
		waitFor(t, "requests after the revoke on both instances", func() bool {
			return r.after[0].Load() >= afterEach && r.after[1].Load() >= afterEach
		})
	}
	close(stop)
	wg.Wait()
	if n := accepted.Load(); n > 0 {
		t.Errorf("%d requests that started after Revoke returned were accepted", n)
	}
	if err := unexpected.Load(); err != nil {
		t.Errorf("unexpected outcome after the revoke: %v", err)
	}
	ws, missing := waits()
	for _, m := range missing {
		if len(m) > 0 {
			t.Errorf("a revoke gave up waiting for %v", m)
			break
		}
	}
	if len(ws) != rounds {
		t.Fatalf("%d revokes waited for acknowledgements, want %d", len(ws), rounds)
	}
	t.Logf("%d rounds, %d verifications; wait for acknowledgements p50 %v p99 %v; whole Revoke call p50 %v p99 %v",
		rounds, total.Load(), percentile(ws, 50), percentile(ws, 99), percentile(revokeCalls, 50), percentile(revokeCalls, 99))
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func BenchmarkVerifyCached(b *testing.B) {
	for _, bc := range []struct {
		name    string
		hashKey []byte
	}{{"sha256", nil}, {"hmac", []byte("hash key")}} {
		b.Run(bc.name, func(b *testing.B) {
			_, rdb := redistest.Mini(b)
			s, err := New(rdb, Options{LastUsedFlush: -1, HashKey: bc.hashKey})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			v, err := NewVerifier(s, VerifierOptions{Registerer: prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { v.Close() })
			waitLive(b, v)
			ctx := context.Background()
			k, err := s.Create(ctx, CreateParams{Name: "n", Subject: "s", Scopes: []string{"read"}})
			if err != nil {
				b.Fatal(err)
			}
			v.Verify(ctx, k.Secret, SourceMiddleware)
			if !cached(v, k.ID) {
				b.Fatal("key not cached")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := v.Verify(ctx, k.Secret, SourceMiddleware, "read"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyCachedParallel verifies cached keys from every core at
// once (run with -cpu 1,2,…: ns/op falls with the cores as far as nothing
// on the path is shared and written): one hot key, and 1,024 keys.
//
// Its baseline does comparable work without keygate, on the same keys in
// the same run: the key ID decoded from the secret, a map read by it, a
// SHA-256 of the secret compared in constant time with the stored digest,
// and a copy of the key in one allocation (as every verification returns).
// Nothing in it is shared and written, so how it scales from one core to
// two is what the machine allows: keygate's speedup is to be read against
// it.
//
// Both allocate a key per verification on a heap of a few MiB, so with
// the default GOGC the collector runs hundreds of times a second, and its
// work bounds the speedup of both; GOGC=1000 (a heap nearer a server's
// with a full cache) shows the verification's own (BENCHMARKS.md).
func BenchmarkVerifyCachedParallel(b *testing.B) {
	for _, n := range []int{1, 1024} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			v, secrets := cachedKeys(b, n)
			ctx := context.Background()
			parallelVerifications(b, n, func(i int) (*APIKey, error) {
				return v.Verify(ctx, secrets[i], SourceMiddleware, "read")
			})
		})
	}
	for _, n := range []int{1, 1024} {
		b.Run(fmt.Sprintf("baseline/keys=%d", n), func(b *testing.B) {
			v, secrets := cachedKeys(b, n)
			type record struct {
				digest [sha256.Size]byte
				key    *APIKey
			}
			records := make(map[keyID]record, n)
			prefix := v.store.secretPrefix(secrets[0])
			for _, secret := range secrets {
				kid := parseKeyID(secret[len(prefix) : len(prefix)+idHexLen])
				e := v.cache.get(&kid, time.Now())
				if e == nil {
					b.Fatal("key not cached")
				}
				records[kid] = record{digest: sha256.Sum256([]byte(secret)), key: e.key}
			}
			parallelVerifications(b, n, func(i int) (*APIKey, error) {
				secret := secrets[i]
				r, ok := records[parseKeyID(secret[len(prefix):len(prefix)+idHexLen])]
				sum := sha256.Sum256(stringBytes(secret))
				if !ok || subtle.ConstantTimeCompare(sum[:], r.digest[:]) != 1 {
					return nil, ErrNotFound
				}
				u := &usedKey{key: *r.key, lastUsed: 1}
				u.key.LastUsedAt = &u.lastUsed
				return &u.key, nil
			})
		})
	}
}

// cachedKeys creates n keys with the scope "read", on a verifier whose
// cache holds them for an hour, and returns their secrets.
func cachedKeys(b *testing.B, n int) (*Verifier, []string) {
	b.Helper()
	_, rdb := redistest.Mini(b)
	s, err := New(rdb, Options{LastUsedFlush: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	v, err := NewVerifier(s, VerifierOptions{Registerer: prometheus.NewRegistry(), CacheTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	waitLive(b, v)
	ctx := context.Background()
	secrets := make([]string, n)
	for i := range secrets {
		k, err := s.Create(ctx, CreateParams{Name: "n", Subject: "s", Scopes: []string{"read"}})
		if err != nil {
			b.Fatal(err)
		}
		v.Verify(ctx, k.Secret, SourceMiddleware)
		if !cached(v, k.ID) {
			b.Fatal("key not cached")
		}
		secrets[i] = k.Secret
	}
	return v, secrets
}

// parallelVerifications runs verify from every core, each goroutine
// walking the n keys from its own start, and reports the CPU time per
// verification of all the process's threads: on cores shared with other
// work it tells contention (the same work costing more CPU on more cores)
// where ns/op cannot. Each goroutine keeps the last key returned, as a
// caller keeps the key it verified: returned, the baseline's copy is on the
// heap as keygate's is.
func parallelVerifications(b *testing.B, n int, verify func(i int) (*APIKey, error)) {
	b.ReportAllocs()
	cpu := processCPU()
	b.ResetTimer()
	var next atomic.Uint32
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		var last *APIKey
		for pb.Next() {
			k, err := verify(i % n)
			if err != nil {
				b.Error(err)
				return
			}
			last = k
			i++
		}
		runtime.KeepAlive(last)
	})
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkVerifyUncached(b *testing.B) {
	rdb := redistest.Server(b)
	s, err := New(rdb, Options{LastUsedFlush: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	v, err := NewVerifier(s, VerifierOptions{CacheTTL: -1, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { v.Close() })
	ctx := context.Background()
	k, err := s.Create(ctx, CreateParams{Name: "n", Subject: "s", Scopes: []string{"read"}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := v.Verify(ctx, k.Secret, SourceMiddleware, "read"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCacheBoundedInBytes verifies keys with 8 KiB of claims each through
// a cache of 1 MiB: the cache holds at most that, and the heap does not
// grow with the number of keys verified.
func TestCacheBoundedInBytes(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	const maxBytes = 1 << 20
	v := newVerifier(t, e, VerifierOptions{CacheMaxBytes: maxBytes})
	waitLive(t, v)
	claims := json.RawMessage(`{"blob":"` + strings.Repeat("x", 8*1024-12) + `"}`)
	var secrets []string
	for range 600 {
		k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s", Claims: claims})
		secrets = append(secrets, k.Secret)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, s := range secrets {
		if _, err := v.Verify(ctx, s, SourceAPI); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := v.cache.size(); got > maxBytes || got < maxBytes/2 {
		t.Fatalf("cache holds %d bytes by its estimate, want at most %d (and not far below)", got, maxBytes)
	}
	// 600 records of 8 KiB would be 4.9 MB; allow the cache's MiB and
	// slack for the estimate.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 2*maxBytes {
		t.Fatalf("heap grew by %d bytes verifying 600 keys of 8 KiB through a 1 MiB cache", grew)
	}

	// Expired entries are swept.
	e.clock.Advance(31 * time.Second)
	v.cache.sweep(e.store.now())
	if n := v.cache.len(); n != 0 {
		t.Fatalf("%d entries left after sweeping a cache older than its TTL", n)
	}
}
