package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/redis/go-redis/v9"
)

// env is a store under test with its clock and a counter of the Redis
// commands it sends.
type env struct {
	store *Store
	rdb   *redis.Client
	clock *testclock.Clock
	cmds  *commandCounter
}

// backends runs fn once on miniredis and once on a real redis-server.
func backends(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) {
		_, rdb := redistest.Mini(t)
		fn(t, newEnv(t, rdb))
	})
	t.Run("redis-server", func(t *testing.T) {
		fn(t, newEnv(t, redistest.Server(t)))
	})
}

func newEnv(t testing.TB, rdb *redis.Client, opts ...func(*Options)) *env {
	t.Helper()
	c := testclock.New()
	counter := &commandCounter{}
	rdb.AddHook(counter)
	o := Options{Now: c.Now, LastUsedFlush: -1}
	for _, f := range opts {
		f(&o)
	}
	s, err := New(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &env{store: s, rdb: rdb, clock: c, cmds: counter}
}

// commandCounter is a go-redis hook that counts commands and round trips.
// It leaves out a verifier's own background commands (heartbeats and
// acknowledgements of invalidations), which are not the verifications',
// and the setup of new connections (HELLO, CLIENT SETINFO), which depends
// on how many the pool happens to hold.
type commandCounter struct {
	mu         sync.Mutex
	names      []string
	roundTrips int
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(backgroundKey{}) != nil || connectionSetup(cmd) {
			return next(ctx, cmd)
		}
		c.mu.Lock()
		c.names = append(c.names, cmd.Name())
		c.roundTrips++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if ctx.Value(backgroundKey{}) != nil || len(cmds) > 0 && connectionSetup(cmds[0]) {
			return next(ctx, cmds)
		}
		c.mu.Lock()
		for _, cmd := range cmds {
			c.names = append(c.names, cmd.Name())
		}
		c.roundTrips++
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

// connectionSetup reports whether cmd is one go-redis sends on a new
// connection before any other.
func connectionSetup(cmd redis.Cmder) bool {
	return cmd.Name() == "hello" || cmd.Name() == "client"
}

func (c *commandCounter) reset() {
	c.mu.Lock()
	c.names, c.roundTrips = nil, 0
	c.mu.Unlock()
}

func (c *commandCounter) snapshot() ([]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.names...), c.roundTrips
}

func ptr[T any](v T) *T { return &v }

func mustCreate(t *testing.T, s *Store, p CreateParams) *APIKey {
	t.Helper()
	k, err := s.Create(context.Background(), p)
	if err != nil {
		t.Fatalf("Create(%+v): %v", p, err)
	}
	return k
}

func TestLifecycle(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := e.store
		k := mustCreate(t, s, CreateParams{
			Name: "ci deploy", Subject: "user_1", Scopes: []string{"reports:read"},
			Claims: json.RawMessage(`{ "team": "ops" }`), SecondsUntilExpiration: ptr[int64](60),
		})
		if !strings.HasPrefix(k.Secret, "ak_") || !ValidID(k.ID) {
			t.Fatalf("created key has id %q and secret prefix %q", k.ID, k.Secret[:3])
		}
		if want := e.clock.Now().UnixMilli() + 60_000; k.Expiration == nil || *k.Expiration != want {
			t.Fatalf("expiration = %v, want %d", k.Expiration, want)
		}
		if string(k.Claims) != `{"team":"ops"}` {
			t.Errorf("claims = %s, want compact JSON", k.Claims)
		}

		got, err := s.Verify(ctx, k.Secret)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if got.ID != k.ID || got.Subject != "user_1" || got.Secret != "" {
			t.Fatalf("Verify returned %+v", got)
		}

		// Another key's secret for this ID: right form, wrong digest.
		other := mustCreate(t, s, CreateParams{Name: "other", Subject: "user_2"})
		forged := forgeSecret(t, k.ID, other.Secret)
		if _, err := s.Verify(ctx, forged); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Verify(forged) = %v, want ErrNotFound", err)
		}

		if _, err := s.Revoke(ctx, k.ID, ptr("leaked")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Verify(ctx, k.Secret); !errors.Is(err, ErrRevoked) {
			t.Fatalf("Verify(revoked) = %v, want ErrRevoked", err)
		}

		// Crossing the expiry: valid one millisecond before, expired at it.
		e.clock.Advance(59*time.Second + 999*time.Millisecond)
		if _, err := s.Verify(ctx, other.Secret); err != nil {
			t.Fatalf("Verify(other) = %v", err)
		}
		exp := mustCreate(t, s, CreateParams{Name: "short", Subject: "user_1", SecondsUntilExpiration: ptr[int64](1)})
		e.clock.Advance(999 * time.Millisecond)
		if _, err := s.Verify(ctx, exp.Secret); err != nil {
			t.Fatalf("Verify 1ms before expiry = %v", err)
		}
		e.clock.Advance(time.Millisecond)
		if _, err := s.Verify(ctx, exp.Secret); !errors.Is(err, ErrExpired) {
			t.Fatalf("Verify at expiry = %v, want ErrExpired", err)
		}
		g, err := s.Get(ctx, exp.ID)
		if err != nil || !g.Expired {
			t.Fatalf("Get(expired) = %+v, %v; want expired", g, err)
		}
	})
}

// forgeSecret builds a well-formed secret (valid checksum) for id with the
// random part of another secret.
func forgeSecret(t *testing.T, id, donor string) string {
	t.Helper()
	body := id[len(idPrefix):] + donor[3+idHexLen:3+idHexLen+randomLen]
	b := appendChecksum([]byte("ak_"+body), crc32.ChecksumIEEE([]byte("ak_"+body)))
	if _, err := parseSecret("ak_", string(b)); err != nil {
		t.Fatalf("forged secret does not parse: %v", err)
	}
	return string(b)
}

func TestVerifyCostsOneRoundTrip(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
		for _, tc := range []struct {
			name   string
			secret string
			want   error
			cmds   int
		}{
			{"valid", k.Secret, nil, 1},
			{"unknown id", forgeSecret(t, "ak_"+strings.Repeat("0", 32), k.Secret), ErrNotFound, 1},
			{"bad checksum", k.Secret[:len(k.Secret)-1] + flip(k.Secret[len(k.Secret)-1]), ErrMalformed, 0},
			{"garbage", "hello", ErrMalformed, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e.cmds.reset()
				_, err := e.store.Verify(ctx, tc.secret)
				if !errors.Is(err, tc.want) {
					t.Fatalf("Verify = %v, want %v", err, tc.want)
				}
				names, trips := e.cmds.snapshot()
				if len(names) != tc.cmds || trips != tc.cmds {
					t.Fatalf("Verify sent %v in %d round trips, want %d", names, trips, tc.cmds)
				}
			})
		}

		// Through a verifier that reads Redis every time: a keygate key
		// still costs one round trip once keys are imported, an imported
		// key two, and a string in neither form nothing until a key is
		// imported, then the one lookup.
		v := newVerifier(t, e, VerifierOptions{CacheTTL: -1})
		waitFor(t, "the verifier to read whether keys were imported", e.store.imports.known)
		foreign := "legacy-" + strings.Repeat("x", 40)
		sum := sha256.Sum256([]byte(foreign))
		cost := func(name, secret string, want error, trips int) {
			t.Helper()
			e.cmds.reset()
			if _, err := v.Verify(ctx, secret, SourceAPI); !errors.Is(err, want) || (want == nil) != (err == nil) {
				t.Fatalf("%s: Verify = %v, want %v", name, err, want)
			}
			if names, n := e.cmds.snapshot(); n != trips || len(names) != trips {
				t.Fatalf("%s: Verify sent %v in %d round trips, want %d", name, names, n, trips)
			}
		}
		cost("garbage, nothing imported", "hello", ErrMalformed, 0)
		cost("foreign, nothing imported", foreign, ErrMalformed, 0)
		cost("keygate key", k.Secret, nil, 1)
		if _, err := e.store.Import(ctx, ImportParams{CreateParams: CreateParams{Name: "i", Subject: "s"},
			Hash: ImportHash{Algorithm: "sha256", Value: hex.EncodeToString(sum[:])}}); err != nil {
			t.Fatal(err)
		}
		cost("keygate key, keys imported", k.Secret, nil, 1)
		cost("imported key", foreign, nil, 2)
		cost("garbage, keys imported", "hello", ErrMalformed, 1)
		cost("bad checksum, keys imported", k.Secret[:len(k.Secret)-1]+flip(k.Secret[len(k.Secret)-1]), ErrMalformed, 0)
	})
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func TestLastUsedIsBatched(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		k := mustCreate(t, e.store, CreateParams{Name: "hot", Subject: "s"})
		cold := mustCreate(t, e.store, CreateParams{Name: "cold", Subject: "s"})
		// The first flush loads the script (EVALSHA, NOSCRIPT, EVAL); measure
		// the steady state after it.
		e.store.Verify(ctx, k.Secret)
		e.store.FlushLastUsed(ctx)
		e.cmds.reset()
		for i := 0; i < 10_000; i++ {
			e.clock.Advance(time.Millisecond)
			if _, err := e.store.Verify(ctx, k.Secret); err != nil {
				t.Fatal(err)
			}
		}
		last := e.clock.Now().UnixMilli()
		if names, _ := e.cmds.snapshot(); len(names) != 10_000 || countWrites(names) != 0 {
			t.Fatalf("10,000 verifications sent %d commands, %d of them writes", len(names), countWrites(names))
		}
		e.cmds.reset()
		if err := e.store.FlushLastUsed(ctx); err != nil {
			t.Fatal(err)
		}
		names, _ := e.cmds.snapshot()
		if len(names) != 1 || countWrites(names) != 1 {
			t.Fatalf("flush sent %v, want one write", names)
		}
		got, _ := e.store.Get(ctx, k.ID)
		if got.LastUsedAt == nil || *got.LastUsedAt != last {
			t.Fatalf("last_used_at = %v, want %d", got.LastUsedAt, last)
		}
		if got, _ := e.store.Get(ctx, cold.ID); got.LastUsedAt != nil {
			t.Fatalf("unused key has last_used_at %d", *got.LastUsedAt)
		}

		// Nothing new: a flush writes nothing.
		e.cmds.reset()
		e.store.FlushLastUsed(ctx)
		if names, _ := e.cmds.snapshot(); len(names) != 0 {
			t.Fatalf("idle flush sent %v", names)
		}

		// Only if newer: another instance's older use does not move it back.
		e.store.lastUsed.record(&stripeNumbers[0], k.ID, last-5000)
		e.store.FlushLastUsed(ctx)
		if got, _ := e.store.Get(ctx, k.ID); *got.LastUsedAt != last {
			t.Fatalf("older use overwrote last_used_at: %d, want %d", *got.LastUsedAt, last)
		}

		// A flush after a delete does not bring the key back.
		e.store.Verify(ctx, k.Secret)
		if err := e.store.Delete(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		e.store.FlushLastUsed(ctx)
		if _, err := e.store.Get(ctx, k.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after a flush of a deleted key = %v, want ErrNotFound", err)
		}
		if h, _ := e.rdb.HGetAll(ctx, e.store.names.record(k.ID)).Result(); h[fLastUsedAt] != "" || h[fName] != "" {
			t.Fatalf("flush wrote to a deleted key's tombstone: %v", h)
		}
	})
}

func countWrites(names []string) int {
	n := 0
	for _, c := range names {
		switch c {
		case "evalsha", "eval", "hset":
			n++
		}
	}
	return n
}

// recordUse records a use of id at ms as a verification does: in the
// stripe of the calling processor.
func recordUse(l *lastUsed, id string, ms int64) {
	sn := takeStripe()
	l.record(sn, id, ms)
	sn.release()
}

// TestLastUsedWhileTaking records uses while flushes take them, into
// shards that flushes have emptied (under -race, a shard read outside its
// lock shows), and checks that no use is lost.
func TestLastUsedWhileTaking(t *testing.T) {
	var l lastUsed
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("ak_%032x", i) // every shard
		recordUse(&l, ids[i], 1)
	}
	l.take() // every shard now holds an empty map
	const uses = 2000
	taken := map[string]int64{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 2; i <= uses; i++ {
			recordUse(&l, ids[i%len(ids)], int64(i))
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		for id, ms := range l.take() {
			taken[id] = max(taken[id], ms)
		}
	}
	for id, ms := range l.take() {
		taken[id] = max(taken[id], ms)
	}
	for i, id := range ids {
		if want := int64(uses - (uses-i)%len(ids)); i >= 2 && taken[id] != want {
			t.Fatalf("key %d: newest use taken %d, want %d", i, taken[id], want)
		}
	}
}

func TestLastUsedSurvivesOutage(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	e.store.Verify(ctx, k.Secret)
	mr.Close()
	if err := e.store.FlushLastUsed(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("flush with Redis down = %v, want ErrUnavailable", err)
	}
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := e.store.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.store.Get(ctx, k.ID); got.LastUsedAt == nil {
		t.Fatal("use recorded during the outage was lost")
	}
}

func TestCloseFlushes(t *testing.T) {
	_, rdb := redistest.Mini(t)
	c := testclock.New()
	s, err := New(rdb, Options{Now: c.Now}) // default flush interval: 1s
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := mustCreate(t, s, CreateParams{Name: "n", Subject: "s"})
	s.Verify(ctx, k.Secret)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := New(rdb, Options{LastUsedFlush: -1})
	if got, _ := s2.Get(ctx, k.ID); got.LastUsedAt == nil || *got.LastUsedAt != c.Now().UnixMilli() {
		t.Fatalf("last_used_at after Close = %v", got.LastUsedAt)
	}
}

func TestRevokeKeepsFirstReason(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
		r1, err := e.store.Revoke(ctx, k.ID, ptr("first"))
		if err != nil || !r1.Revoked || *r1.RevocationReason != "first" {
			t.Fatalf("Revoke = %+v, %v", r1, err)
		}
		e.clock.Advance(time.Second)
		r2, err := e.store.Revoke(ctx, k.ID, ptr("second"))
		if err != nil || *r2.RevocationReason != "first" || r2.UpdatedAt != r1.UpdatedAt {
			t.Fatalf("second Revoke = %+v, %v; want first reason kept", r2, err)
		}
		noReason := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
		if r, err := e.store.Revoke(ctx, noReason.ID, nil); err != nil || r.RevocationReason != nil {
			t.Fatalf("Revoke(nil reason) = %+v, %v", r, err)
		}
		emptyReason := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
		if r, err := e.store.Revoke(ctx, emptyReason.ID, ptr("")); err != nil || r.RevocationReason != nil {
			t.Fatalf("Revoke(empty reason) = %+v, %v; want a null reason", r, err)
		}
		if _, err := e.store.Revoke(ctx, "ak_"+strings.Repeat("f", 32), nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Revoke(unknown) = %v", err)
		}
		if n, _ := e.rdb.Exists(ctx, e.store.names.record("ak_"+strings.Repeat("f", 32))).Result(); n != 0 {
			t.Fatal("revoking an unknown key created a record")
		}
	})
}

func TestUpdate(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		k := mustCreate(t, e.store, CreateParams{
			Name: "n", Subject: "user_1", Description: ptr("old"), Scopes: []string{"a"},
			Claims: json.RawMessage(`{"x":1}`), SecondsUntilExpiration: ptr[int64](10),
		})
		e.clock.Advance(time.Second)
		u, err := e.store.Update(ctx, k.ID, UpdateParams{
			Subject: "user_1", Description: ptr("new"), Scopes: &[]string{"b", "c"},
			Claims: json.RawMessage(`{"y":2}`), SecondsUntilExpiration: ptr[int64](3600),
		})
		if err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now().UnixMilli()
		if *u.Description != "new" || strings.Join(u.Scopes, ",") != "b,c" || string(u.Claims) != `{"y":2}` ||
			*u.Expiration != now+3_600_000 || u.UpdatedAt != now || u.CreatedAt != k.CreatedAt || u.Name != "n" {
			t.Fatalf("updated key = %+v", u)
		}
		u, err = e.store.Update(ctx, k.ID, UpdateParams{Description: ptr(""), Scopes: &[]string{}, Claims: json.RawMessage("null"), NeverExpires: true})
		if err != nil {
			t.Fatal(err)
		}
		if u.Description != nil || len(u.Scopes) != 0 || u.Scopes == nil || u.Claims != nil || u.Expiration != nil {
			t.Fatalf("cleared key = %+v", u)
		}
		var ve *ValidationError
		if _, err := e.store.Update(ctx, k.ID, UpdateParams{Subject: "user_2", Description: ptr("x")}); !errors.As(err, &ve) || ve.Param != "subject" {
			t.Fatalf("Update(wrong subject) = %v", err)
		}
		if g, _ := e.store.Get(ctx, k.ID); g.Description != nil {
			t.Fatal("a refused update changed the key")
		}
		if _, err := e.store.Update(ctx, "ak_"+strings.Repeat("1", 32), UpdateParams{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update(unknown) = %v", err)
		}
	})
}

func TestDelete(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
		if err := e.store.Delete(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Verify(ctx, k.Secret); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Verify(deleted) = %v", err)
		}
		// Repeating a delete succeeds (and publishes again) while the
		// tombstone lasts; a key that never was is not found.
		if err := e.store.Delete(ctx, k.ID); err != nil {
			t.Fatalf("second Delete = %v, want success", err)
		}
		if ttl, _ := e.rdb.PTTL(ctx, e.store.names.record(k.ID)).Result(); ttl <= 0 || ttl > tombstoneTTL {
			t.Fatalf("tombstone TTL = %v, want (0, %v]", ttl, tombstoneTTL)
		}
		for _, f := range []func() error{
			func() error { _, err := e.store.Revoke(ctx, k.ID, nil); return err },
			func() error { _, err := e.store.Update(ctx, k.ID, UpdateParams{}); return err },
			func() error { _, err := e.store.Get(ctx, k.ID); return err },
			func() error { return e.store.Delete(ctx, "ak_"+strings.Repeat("0", 32)) },
		} {
			if err := f(); !errors.Is(err, ErrNotFound) {
				t.Fatalf("on a deleted or unknown key: %v, want ErrNotFound", err)
			}
		}
		for _, sc := range []scope{e.store.names.allScope(), e.store.names.subjectScope("s")} {
			for _, index := range append(sc.keys(), e.store.names.journal()) {
				if n, _ := e.rdb.ZCard(ctx, index).Result(); n != 0 {
					t.Fatalf("%s still holds %d entries", index, n)
				}
			}
		}
	})
}

func TestList(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := e.store
		var ids []string // oldest first
		for i := 0; i < 30; i++ {
			e.clock.Advance(time.Millisecond)
			name := "Key " + string(rune('A'+i%26))
			if i%3 == 0 {
				name = "Deploy " + name
			}
			sub := "user_a"
			if i%2 == 1 {
				sub = "user_b"
			}
			k := mustCreate(t, s, CreateParams{Name: name, Subject: sub, SecondsUntilExpiration: ptr[int64](3600)})
			ids = append(ids, k.ID)
		}
		// Key 0 (user_a, deploy) revoked; key 2 (user_a) expires early.
		s.Revoke(ctx, ids[0], nil)
		s.Update(ctx, ids[2], UpdateParams{SecondsUntilExpiration: ptr[int64](1)})
		e.clock.Advance(2 * time.Second)

		page := func(p ListParams) []string {
			t.Helper()
			l, err := s.List(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			out := []string{}
			for _, k := range l.Data {
				out = append(out, k.ID)
			}
			return append(out, "total="+strconv.Itoa(l.TotalCount))
		}
		want := func(total int, idx ...int) []string {
			out := []string{}
			for _, i := range idx {
				out = append(out, ids[i])
			}
			return append(out, "total="+strconv.Itoa(total))
		}
		for _, tc := range []struct {
			name string
			p    ListParams
			want []string
		}{
			{"all, newest first", ListParams{IncludeInvalid: true, Limit: 3}, want(30, 29, 28, 27)},
			{"all, offset", ListParams{IncludeInvalid: true, Limit: 2, Offset: 28}, want(30, 1, 0)},
			{"offset past the end", ListParams{IncludeInvalid: true, Offset: 40}, want(30)},
			{"valid only", ListParams{Subject: "user_a", Limit: 100}, want(13, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4)},
			{"with invalid", ListParams{Subject: "user_a", IncludeInvalid: true, Limit: 2, Offset: 13}, want(15, 2, 0)},
			{"query, case-insensitive", ListParams{Subject: "user_a", Query: "dEPLOY", Limit: 2}, want(4, 24, 18)},
			{"query with invalid", ListParams{Subject: "user_a", Query: "deploy", IncludeInvalid: true, Limit: 10, Offset: 4}, want(5, 0)},
			{"unknown subject", ListParams{Subject: "nobody"}, want(0)},
			{"default limit", ListParams{IncludeInvalid: true}, want(30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if got := page(tc.p); strings.Join(got, " ") != strings.Join(tc.want, " ") {
					t.Fatalf("List(%+v)\n got %v\nwant %v", tc.p, got, tc.want)
				}
			})
		}
		l, err := s.GetAll(ctx, GetAllParams{Subject: "user_b", InitialPage: 2, PageSize: 4})
		if err != nil || l.TotalCount != 15 || len(l.Data) != 4 || l.Data[0].ID != ids[21] {
			t.Fatalf("GetAll page 2 = %+v, %v", l, err)
		}
	})
}

func TestListRemovesEntriesWithoutRecords(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		s := e.store
		k := mustCreate(t, s, CreateParams{Name: "real", Subject: "s"})
		// Entries whose records are gone (a delete cut short after its
		// record), older and newer than the real key.
		gone := []string{"ak_" + strings.Repeat("a", 32), "ak_" + strings.Repeat("b", 32)}
		scores := []float64{float64(k.CreatedAt - 1000), float64(k.CreatedAt + 1)}
		for _, sc := range []scope{s.names.allScope(), s.names.subjectScope("s")} {
			for i, id := range gone {
				e.rdb.ZAdd(ctx, sc.valid, redis.Z{Score: scores[i], Member: id})
				e.rdb.ZAdd(ctx, sc.invalid, redis.Z{Score: scores[i], Member: id})
			}
		}
		for _, p := range []ListParams{{Subject: "s"}, {IncludeInvalid: true}, {}, {Subject: "s", IncludeInvalid: true}} {
			l, err := s.List(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if l.TotalCount != 1 || len(l.Data) != 1 || l.Data[0].ID != k.ID {
				t.Fatalf("List(%+v) = %d keys, total %d; want only the real key", p, len(l.Data), l.TotalCount)
			}
		}
		for _, sc := range []scope{s.names.allScope(), s.names.subjectScope("s")} {
			for _, index := range []string{sc.valid, sc.invalid} {
				for _, id := range gone {
					if _, err := e.rdb.ZScore(ctx, index, id).Result(); !errors.Is(err, redis.Nil) {
						t.Errorf("%s still holds %s, whose record is gone", index, id)
					}
				}
			}
		}
	})
}

func TestValidation(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	scopes := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "s" + strconv.Itoa(i)
		}
		return out
	}
	ok := CreateParams{Name: "n", Subject: "s"}
	with := func(f func(*CreateParams)) CreateParams { p := ok; f(&p); return p }
	for _, tc := range []struct {
		name    string
		p       CreateParams
		param   string
		missing bool
	}{
		{"no name", with(func(p *CreateParams) { p.Name = "" }), "name", true},
		{"no subject", with(func(p *CreateParams) { p.Subject = "" }), "subject", true},
		{"long name", with(func(p *CreateParams) { p.Name = long(257) }), "name", false},
		{"long subject", with(func(p *CreateParams) { p.Subject = long(257) }), "subject", false},
		{"long description", with(func(p *CreateParams) { p.Description = ptr(long(1025)) }), "description", false},
		{"invalid UTF-8", with(func(p *CreateParams) { p.Name = "a\xffb" }), "name", false},
		{"claims not an object", with(func(p *CreateParams) { p.Claims = json.RawMessage(`[1]`) }), "claims", false},
		{"claims not JSON", with(func(p *CreateParams) { p.Claims = json.RawMessage(`{`) }), "claims", false},
		{"claims too large", with(func(p *CreateParams) { p.Claims = json.RawMessage(`{"a":"` + long(8192) + `"}`) }), "claims", false},
		{"too many scopes", with(func(p *CreateParams) { p.Scopes = scopes(101) }), "scopes", false},
		{"empty scope", with(func(p *CreateParams) { p.Scopes = []string{"a", ""} }), "scopes", false},
		{"scope with space", with(func(p *CreateParams) { p.Scopes = []string{"a b"} }), "scopes", false},
		{"long scope", with(func(p *CreateParams) { p.Scopes = []string{long(129)} }), "scopes", false},
		{"zero seconds", with(func(p *CreateParams) { p.SecondsUntilExpiration = ptr[int64](0) }), "seconds_until_expiration", false},
		{"negative seconds", with(func(p *CreateParams) { p.SecondsUntilExpiration = ptr[int64](-1) }), "seconds_until_expiration", false},
		{"huge seconds", with(func(p *CreateParams) { p.SecondsUntilExpiration = ptr[int64](1e12) }), "seconds_until_expiration", false},
		{"wrong type", with(func(p *CreateParams) { p.Type = "jwt" }), "type", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rdb := redistest.Mini(t)
			e := newEnv(t, rdb)
			_, err := e.store.Create(context.Background(), tc.p)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Param != tc.param || ve.Missing != tc.missing {
				t.Fatalf("Create = %v, want a ValidationError on %s (missing=%v)", err, tc.param, tc.missing)
			}
			if n, _ := rdb.DBSize(context.Background()).Result(); n != 0 {
				t.Fatalf("a refused Create wrote %d Redis keys", n)
			}
		})
	}
	// The limits themselves are accepted.
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	mustCreate(t, e.store, CreateParams{Name: long(256), Subject: long(256), Description: ptr(long(1024)),
		Scopes: append(scopes(99), "A-z0-9:._/*"), SecondsUntilExpiration: ptr[int64](MaxSecondsUntilExpiration)})

	for _, tc := range []struct {
		p     ListParams
		param string
	}{
		{ListParams{Limit: 101}, "limit"},
		{ListParams{Limit: -1}, "limit"},
		{ListParams{Offset: -1}, "offset"},
		{ListParams{Offset: MaxOffset + 1}, "offset"},
		{ListParams{Type: "x"}, "type"},
	} {
		var ve *ValidationError
		if _, err := e.store.List(context.Background(), tc.p); !errors.As(err, &ve) || ve.Param != tc.param {
			t.Errorf("List(%+v) = %v, want a ValidationError on %s", tc.p, err, tc.param)
		}
	}
}

func TestUnavailable(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	mr.Close()
	checks := map[string]error{}
	_, checks["Verify"] = e.store.Verify(ctx, k.Secret)
	_, checks["Get"] = e.store.Get(ctx, k.ID)
	_, checks["Create"] = e.store.Create(ctx, CreateParams{Name: "n", Subject: "s"})
	_, checks["List"] = e.store.List(ctx, ListParams{})
	_, checks["Revoke"] = e.store.Revoke(ctx, k.ID, nil)
	_, checks["Update"] = e.store.Update(ctx, k.ID, UpdateParams{Description: ptr("d")})
	checks["Delete"] = e.store.Delete(ctx, k.ID)
	for op, err := range checks {
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with Redis down = %v, want ErrUnavailable", op, err)
		}
		if err != nil && strings.Contains(err.Error(), k.Secret) {
			t.Errorf("%s error contains the secret", op)
		}
		for _, outcome := range []error{ErrNotFound, ErrRevoked, ErrExpired, ErrMalformed} {
			if errors.Is(err, outcome) {
				t.Errorf("%s with Redis down reports %v", op, outcome)
			}
		}
	}
}

func TestSecretNeverStored(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
		e.store.Verify(ctx, k.Secret)
		e.store.FlushLastUsed(ctx)
		random := k.Secret[3+idHexLen : 3+idHexLen+randomLen]
		keys, _ := e.rdb.Keys(ctx, "*").Result()
		for _, key := range keys {
			dump := key
			switch typ, _ := e.rdb.Type(ctx, key).Result(); typ {
			case "hash":
				h, _ := e.rdb.HGetAll(ctx, key).Result()
				for f, v := range h {
					dump += " " + f + " " + v
				}
			case "zset":
				m, _ := e.rdb.ZRange(ctx, key, 0, -1).Result()
				dump += " " + strings.Join(m, " ")
			}
			if strings.Contains(dump, random) {
				t.Fatalf("Redis key %s holds the secret", key)
			}
		}
	})
}

func TestHashKey(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := context.Background()
	a := newEnv(t, rdb, func(o *Options) { o.HashKey = []byte("one") })
	k := mustCreate(t, a.store, CreateParams{Name: "n", Subject: "s"})
	if _, err := a.store.Verify(ctx, k.Secret); err != nil {
		t.Fatalf("Verify under the same hash key = %v", err)
	}
	for name, opts := range map[string]func(*Options){
		"other hash key": func(o *Options) { o.HashKey = []byte("two") },
		"no hash key":    func(o *Options) {},
	} {
		b := newEnv(t, rdb, opts)
		if _, err := b.store.Verify(ctx, k.Secret); !errors.Is(err, ErrNotFound) {
			t.Errorf("Verify with %s = %v, want ErrNotFound", name, err)
		}
	}
}

func TestNamespace(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := context.Background()
	e := newEnv(t, rdb, func(o *Options) { o.Namespace = "tenant1" })
	mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	keys, _ := rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if !strings.HasPrefix(k, "tenant1:") {
			t.Errorf("Redis key %q is outside the namespace", k)
		}
	}
	if len(keys) != 3 {
		t.Errorf("one key wrote %d Redis keys %v, want record and two index entries", len(keys), keys)
	}
}

func TestWireForm(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	got, _ := e.store.Get(context.Background(), k.ID)
	b, _ := json.Marshal(got)
	var m map[string]any
	json.Unmarshal(b, &m)
	want := map[string]any{
		"object": "api_key", "id": k.ID, "type": "api_key", "name": "n", "subject": "s",
		"description": nil, "claims": nil, "scopes": []any{}, "created_by": nil,
		"created_at": float64(k.CreatedAt), "updated_at": float64(k.CreatedAt),
		"expiration": nil, "expired": false, "revoked": false, "revocation_reason": nil, "last_used_at": nil,
		"rate_limits": []any{}, "credits": nil,
		"enabled": true, "allowed_cidrs": []any{}, "rolled_from": nil, "rolled_to": nil,
	}
	if len(m) != len(want) {
		t.Fatalf("wire form has fields %v, want %v", m, want)
	}
	for f, v := range want {
		if gv, ok := m[f]; !ok || toJSON(gv) != toJSON(v) {
			t.Errorf("%s = %v, want %v", f, gv, v)
		}
	}
	if !strings.Contains(toJSON(k), `"secret":"`+k.Secret+`"`) {
		t.Error("created key does not carry its secret")
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestKeyIsItsWireForm: a key the store returns (created, read, verified,
// rolled, and the key a roll left metered by its successor) equals the same
// key after a trip through its JSON form, field for field: the store keeps
// nothing of its own on an APIKey that a user of the type could see.
func TestKeyIsItsWireForm(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	ctx := context.Background()
	v := newVerifier(t, e, VerifierOptions{})
	created := mustCreate(t, e.store, CreateParams{
		Name: "prod", Subject: "org_1", Description: ptr("billing export"), CreatedBy: ptr("ops"),
		Claims: json.RawMessage(`{"tier":"gold"}`), Scopes: []string{"read", "write"},
		RateLimits:             []RateLimit{{Name: "default", Limit: 100, DurationMs: 60_000}},
		Credits:                &Credits{Remaining: 10, Refill: &Refill{Interval: "month", Amount: 10, DayOfMonth: 1}},
		AllowedCIDRs:           []string{"10.0.0.0/8", "2001:db8::/32"},
		SecondsUntilExpiration: ptr[int64](3600),
	})
	verified, err := checkFrom(t, v, created.Secret, "10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	rolled, err := e.store.Roll(ctx, created.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old, err := e.store.Get(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.RolledTo == nil {
		t.Fatalf("the rolled key %+v has no rolled_to", old)
	}
	// The old key is metered by its successor during the grace.
	viaOld, err := checkFrom(t, v, created.Secret, "10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if viaOld.Limits == nil {
		t.Fatal("the rolled key verified without its limits")
	}
	successor, err := e.store.Get(ctx, rolled.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  *APIKey
	}{
		{"created", created},
		{"verified", verified.Key},
		{"rolled", rolled},
		{"read after the roll", old},
		{"verified during the grace", viaOld.Key},
		{"successor", successor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			var decoded APIKey
			if err := json.Unmarshal(b, &decoded); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tc.key, &decoded) {
				t.Errorf("the key differs from its wire form %s:\nstore: %#v\nwire:  %#v", b, *tc.key, decoded)
			}
		})
	}
}

// TestLastUsedNewestFromEveryCore records uses of a few keys from many
// goroutines at once while a flush takes what is pending over and over
// and puts some back as a failed write does: the newest use of each key
// is what the takes end with, whatever stripe recorded it.
func TestLastUsedNewestFromEveryCore(t *testing.T) {
	var l lastUsed
	ids := []string{"ak_00000000000000000000000000000001", "ak_00000000000000000000000000000002", "ak_0000000000000000000000000000000f"}
	const goroutines, perGoroutine = 8, 3000
	// Goroutine g records key ids[i%3] at 1000·i+g ms, in an order that
	// goes back and forth: the newest of key j is the largest such time.
	want := map[string]int64{}
	for g := range goroutines {
		for i := range perGoroutine {
			want[ids[i%3]] = max(want[ids[i%3]], int64(1000*i+g))
		}
	}
	got := map[string]int64{}
	var recording sync.WaitGroup
	done := make(chan struct{})
	flushed := flushWhile(done, l.take, l.putBack, func(batch map[string]int64) {
		for id, ms := range batch {
			got[id] = max(got[id], ms)
		}
	})
	for g := range goroutines {
		recording.Add(1)
		go func() {
			defer recording.Done()
			for i := range perGoroutine {
				j := i
				if i%2 == 1 {
					j = perGoroutine - i // older uses after newer ones
				}
				recordUse(&l, ids[j%3], int64(1000*j+g))
			}
		}()
	}
	recording.Wait()
	close(done)
	<-flushed
	for id, ms := range l.take() {
		got[id] = max(got[id], ms)
	}
	if len(got) != len(want) {
		t.Fatalf("took uses of %d keys, want %d", len(got), len(want))
	}
	for id, ms := range want {
		if got[id] != ms {
			t.Fatalf("%s: newest use taken %d, want %d", id, got[id], ms)
		}
	}
}
