package embedded

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

const ns = "keygate"

func ephemeral(key string) bool { return keystore.IsEphemeral(ns, key) }

// open opens dir with the keystore's ephemeral keys, logging to log when
// given.
func open(t *testing.T, dir string, log *syncbuf.Buffer, clk *testclock.Clock) *Store {
	t.Helper()
	opts := Options{Ephemeral: ephemeral}
	if log != nil {
		opts.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	if clk != nil {
		opts.Now = clk.Now
	}
	e, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// dump is every key of the engine with its type, content and expiry, one
// line each, sorted: two dumps are equal when the data sets are.
func dump(t *testing.T, e *Store) string {
	t.Helper()
	c := newConn(e.mr.Server())
	keys, _, err := c.strings("KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		v, ok, err := c.read(k)
		if err != nil || !ok {
			t.Fatalf("reading %q: %v %v", k, ok, err)
		}
		items := slices.Clone(v.items)
		switch v.typ {
		case typeHash:
			pairs := make([]string, 0, len(items)/2)
			for i := 0; i+1 < len(items); i += 2 {
				pairs = append(pairs, items[i]+"="+items[i+1])
			}
			items = pairs
			sort.Strings(items)
		case typeSet:
			sort.Strings(items)
		case typeZSet:
			for i := range items {
				items[i] = fmt.Sprintf("%s:%v", items[i], v.scores[i])
			}
		}
		x, _ := e.exp.get(k)
		fmt.Fprintf(&b, "%q %c %q %q exp=%d\n", k, v.typ, v.str, items, x.at)
	}
	return b.String()
}

func reopen(t *testing.T, e *Store, dir string, clk *testclock.Clock) *Store {
	t.Helper()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return open(t, dir, nil, clk)
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	clk := testclock.New()
	e := open(t, dir, nil, clk)
	ctx := context.Background()
	rdb := e.Client()
	binary := string([]byte{0, 0xff, 0xfe, 'x', 0x80})
	must(t, rdb.HSet(ctx, "h", "digest", binary, "name", "n", "empty", "").Err())
	must(t, rdb.HDel(ctx, "h", "name").Err())
	must(t, rdb.ZAdd(ctx, "z", redis.Z{Score: 1.5, Member: "a"}, redis.Z{Score: 2, Member: "b"}, redis.Z{Score: 0.1, Member: "c"}).Err())
	must(t, rdb.ZIncrBy(ctx, "z", 1e300, "b").Err())
	must(t, rdb.ZRem(ctx, "z", "c").Err())
	must(t, rdb.Set(ctx, "s", "v", 0).Err())
	must(t, rdb.Append(ctx, "s", "w").Err())
	must(t, rdb.Set(ctx, "ttl", "v", time.Hour).Err())
	must(t, rdb.Set(ctx, "short", "v", time.Minute).Err())
	must(t, rdb.RPush(ctx, "l", "1", "2", "3").Err())
	must(t, rdb.LPop(ctx, "l").Err())
	must(t, rdb.SAdd(ctx, "set", "x", "y", "z").Err())
	must(t, rdb.SRem(ctx, "set", "y").Err())
	must(t, rdb.SMove(ctx, "set", "set2", "z").Err())
	must(t, rdb.Set(ctx, "gone", "v", 0).Err())
	must(t, rdb.Rename(ctx, "gone", "renamed").Err())
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, "tx", "a", "1")
		p.Expire(ctx, "tx", 2*time.Hour)
		return nil
	})
	must(t, err)
	must(t, rdb.Eval(ctx, `redis.call('HSET', 'undeclared', 'f', ARGV[1]); return 1`, nil, "from a script").Err())
	want := dump(t, e)

	clk.Advance(30 * time.Minute) // "short" expires while keygate is down
	e = reopen(t, e, dir, clk)
	defer e.Close()
	got := dump(t, e)
	wantNow := strings.Join(slices.DeleteFunc(strings.Split(want, "\n"), func(l string) bool { return strings.HasPrefix(l, `"short"`) }), "\n")
	if got != wantNow {
		t.Errorf("after restart:\n%s", diff(got, wantNow))
	}
	if !strings.Contains(got, `"ttl" s "v" [] exp=`+fmt.Sprint(clk.Now().Add(-30*time.Minute).Add(time.Hour).UnixMilli())) {
		t.Errorf("the TTL's absolute expiry moved:\n%s", got)
	}
	if left := e.Client().PTTL(ctx, "ttl").Val(); left != 30*time.Minute {
		t.Errorf("PTTL after restart = %v, want the 30 minutes left", left)
	}
	clk.Advance(10 * time.Minute)
	if left := e.Client().TTL(ctx, "ttl").Val(); left != 20*time.Minute {
		t.Errorf("TTL 10 minutes later = %v, want 20 minutes", left)
	}
}

func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	clk := testclock.New()
	e := open(t, dir, nil, clk)
	ctx := context.Background()
	rdb := e.Client()
	must(t, rdb.Set(ctx, "a", "v", time.Minute).Err())
	must(t, rdb.Set(ctx, "b", "v", 3*time.Minute).Err())
	must(t, rdb.Set(ctx, "c", "v", time.Minute).Err())
	must(t, rdb.Persist(ctx, "c").Err())
	must(t, rdb.RPush(ctx, ns+":{inv}:done:n1", "i").Err()) // ephemeral, with a TTL
	must(t, rdb.PExpire(ctx, ns+":{inv}:done:n1", time.Minute).Err())
	clk.Advance(2 * time.Minute)
	must(t, e.expireDue())
	for key, want := range map[string]int64{"a": 0, "b": 1, "c": 1, ns + ":{inv}:done:n1": 0} {
		if n := rdb.Exists(ctx, key).Val(); n != want {
			t.Errorf("after 2 minutes, EXISTS %s = %d, want %d", key, n, want)
		}
	}
	e = reopen(t, e, dir, clk)
	defer e.Close()
	for key, want := range map[string]int64{"a": 0, "b": 1, "c": 1} {
		if n := e.Client().Exists(ctx, key).Val(); n != want {
			t.Errorf("after restart, EXISTS %s = %d, want %d", key, n, want)
		}
	}
}

// TestTTLKeptExactly: a TTL moves only when a command sets it, whatever the
// engine's own TTL (which does not count down) says.
func TestTTLKeptExactly(t *testing.T) {
	dir := t.TempDir()
	clk := testclock.New()
	e := open(t, dir, nil, clk)
	ctx := context.Background()
	rdb := e.Client()
	must(t, rdb.Set(ctx, "lock", "a", time.Minute).Err())
	must(t, rdb.Set(ctx, "counter", "1", 0).Err())
	must(t, rdb.Expire(ctx, "counter", time.Minute).Err())
	must(t, rdb.Set(ctx, "moved", "v", time.Minute).Err())
	must(t, rdb.Set(ctx, "kept", "v", time.Minute).Err())
	clk.Advance(40 * time.Second)
	rdb.SetNX(ctx, "lock", "b", time.Minute)               // refused: the lock's TTL stays
	must(t, rdb.Expire(ctx, "counter", time.Minute).Err()) // set again: a minute from now
	must(t, rdb.Rename(ctx, "moved", "renamed").Err())     // the TTL moves with the key
	must(t, rdb.ExpireGT(ctx, "kept", time.Second).Err())  // not greater: unchanged
	must(t, rdb.Append(ctx, "kept", "w").Err())            // a write without a TTL: unchanged
	want := map[string]time.Duration{"lock": 20 * time.Second, "counter": time.Minute, "renamed": 20 * time.Second, "kept": 20 * time.Second}
	for restart := range 2 {
		for key, ttl := range want {
			if got := e.Client().PTTL(ctx, key).Val(); got != ttl {
				t.Errorf("restart %d: PTTL %s = %v, want %v", restart, key, got, ttl)
			}
		}
		e = reopen(t, e, dir, clk)
	}
	clk.Advance(30 * time.Second)
	must(t, e.expireDue())
	for key, n := range map[string]int64{"lock": 0, "renamed": 0, "kept": 0, "counter": 1} {
		if got := e.Client().Exists(ctx, key).Val(); got != n {
			t.Errorf("after 30 s more, EXISTS %s = %d, want %d", key, got, n)
		}
	}
	e.Close()
}

// TestIdleWritesNothing runs a caching verifier, whose heartbeats and
// registrations are writes, and revokes with acknowledgements: only the
// keys' own changes reach the disk.
func TestIdleWritesNothing(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir, nil, nil)
	defer e.Close()
	ctx := context.Background()
	s, err := keystore.New(e.Client(), keystore.Options{LastUsedFlush: -1})
	must(t, err)
	defer s.Close()
	k, err := s.Create(ctx, keystore.CreateParams{Name: "n", Subject: "s"})
	must(t, err)
	v, err := keystore.NewVerifier(s, keystore.VerifierOptions{SubscriptionStale: 200 * time.Millisecond})
	must(t, err)
	defer v.Close()
	before := e.Stats().Written
	// Wait for three heartbeats: each moves the registration's deadline.
	var seen []float64
	for i := 0; len(seen) < 4; i++ {
		if members := e.Client().ZRangeWithScores(ctx, ns+":{inv}:verifiers", 0, -1).Val(); len(members) == 1 {
			if len(seen) == 0 || members[0].Score != seen[len(seen)-1] {
				seen = append(seen, members[0].Score)
			}
		}
		if i > 1000 {
			t.Fatalf("heartbeats seen: %v", seen)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.Stats().Written - before; got != 0 {
		t.Errorf("heartbeats wrote %d bytes to disk, want 0", got)
	}
	// A revoke writes the key, not the publish or the acknowledgement.
	if _, err := v.Verify(ctx, k.Secret, keystore.SourceAPI); err != nil {
		t.Fatal(err)
	}
	before = e.Stats().Written
	if _, err := s.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got := e.Stats().Written - before; got == 0 || got > 600 {
		t.Errorf("a revoke wrote %d bytes, want the record only (under 600)", got)
	}
	if n := append(e.Client().Keys(ctx, ns+":{inv}:pending:*").Val(), e.Client().Keys(ctx, ns+":{inv}:done:*").Val()...); len(n) != 0 {
		t.Errorf("acknowledgement lists left: %v", n)
	}
}

// TestCostFollowsChange: adding to a large index logs one entry.
func TestCostFollowsChange(t *testing.T) {
	e := open(t, t.TempDir(), nil, nil)
	defer e.Close()
	ctx := context.Background()
	rdb := e.Client()
	members := make([]redis.Z, 20_000)
	for i := range members {
		members[i] = redis.Z{Score: float64(i), Member: fmt.Sprintf("ak_%032d", i)}
	}
	must(t, rdb.ZAdd(ctx, ns+":keys", members...).Err())
	before := e.Stats().Written
	must(t, rdb.ZAdd(ctx, ns+":keys", redis.Z{Score: 1, Member: "ak_new"}).Err())
	must(t, rdb.HSet(ctx, ns+":key:ak_new", "n", "name", "s", "subject").Err())
	must(t, rdb.HSet(ctx, ns+":key:ak_new", "lu", "1").Err())
	if got := e.Stats().Written - before; got > 200 {
		t.Errorf("three small writes beside 20,000 entries logged %d bytes, want under 200", got)
	}
}

func TestRefused(t *testing.T) {
	e := open(t, t.TempDir(), nil, nil)
	defer e.Close()
	ctx := context.Background()
	rdb := e.Client()
	for _, c := range []struct {
		name string
		err  error
	}{
		{"PFADD durable", rdb.PFAdd(ctx, "hll", "a").Err()},
		{"XADD durable", rdb.XAdd(ctx, &redis.XAddArgs{Stream: "st", Values: []string{"a", "b"}}).Err()},
		{"HEXPIRE durable", rdb.HExpire(ctx, "h", time.Minute, "f").Err()},
		{"SWAPDB", rdb.Do(ctx, "swapdb", 0, 1).Err()},
		{"PFADD in a script", rdb.Eval(ctx, `return redis.call('PFADD', KEYS[1], 'a')`, []string{"hll2"}).Err()},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), "embedded store") {
			t.Errorf("%s: err = %v, want a refusal naming the embedded store", c.name, c.err)
		}
	}
	if err := rdb.PFAdd(ctx, ns+":{inv}:x", "a").Err(); err != nil {
		t.Errorf("PFADD on an ephemeral key: %v", err)
	}
	if n := rdb.Exists(ctx, "hll", "st", "hll2").Val(); n != 0 {
		t.Errorf("refused commands created %d keys", n)
	}
}

// TestUnknownCommandLogsEverything: a command missing from the tables
// (as a newer engine's would be) makes the store log the whole data set.
func TestUnknownCommandLogsEverything(t *testing.T) {
	saved := commands["SETRANGE"]
	delete(commands, "SETRANGE")
	defer func() { commands["SETRANGE"] = saved }()
	dir := t.TempDir()
	log := &syncbuf.Buffer{}
	e := open(t, dir, log, nil)
	ctx := context.Background()
	must(t, e.Client().Set(ctx, "a", "hello", 0).Err())
	must(t, e.Client().Set(ctx, "b", "x", 0).Err())
	must(t, e.Client().SetRange(ctx, "a", 0, "J").Err())
	want := dump(t, e)
	e = reopen(t, e, dir, nil)
	defer e.Close()
	if got := dump(t, e); got != want || !strings.Contains(got, `"Jello"`) {
		t.Errorf("after restart:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(log.String(), "SETRANGE") {
		t.Errorf("no warning naming the command:\n%s", log)
	}
}

func TestBlockingCommandOnDurableKey(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir, nil, nil)
	ctx := context.Background()
	rdb := e.Client()
	must(t, rdb.RPush(ctx, "jobs", "keep").Err())
	popped := make(chan []string)
	go func() {
		first := rdb.BLPop(ctx, 0, "empty").Val()
		popped <- append(first, rdb.BLPop(ctx, 0, "jobs").Val()...)
	}()
	must(t, rdb.RPush(ctx, "empty", "a").Err())
	if got := <-popped; !slices.Equal(got, []string{"empty", "a", "jobs", "keep"}) {
		t.Fatalf("BLPOP = %v", got)
	}
	want := dump(t, e)
	e = reopen(t, e, dir, nil)
	defer e.Close()
	if got := dump(t, e); got != want {
		t.Errorf("after restart:\n%s", diff(got, want))
	}
	pipe := e.Client().Pipeline()
	pipe.RPush(ctx, "x", "1")
	pipe.BLPop(ctx, time.Millisecond, "x")
	if _, err := pipe.Exec(ctx); !errors.Is(err, errBlockingPipeline) {
		t.Errorf("blocking pipeline with a write: %v, want it refused", err)
	}
}

// TestConcurrentWritesAndCompaction writes to a few keys from many
// goroutines while compactions run, then checks that a restart finds the
// data set as it was.
func TestConcurrentWritesAndCompaction(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir, nil, nil)
	ctx := context.Background()
	rdb := e.Client()
	for i := range 2000 {
		must(t, rdb.ZAdd(ctx, "idx", redis.Z{Score: float64(i), Member: fmt.Sprint(i)}).Err())
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprint("h", i%7)
				switch (g + i) % 5 {
				case 0:
					rdb.HSet(ctx, k, "f", i, fmt.Sprint("g", g), i)
				case 1:
					rdb.Del(ctx, k)
				case 2:
					rdb.ZAdd(ctx, "idx", redis.Z{Score: float64(i), Member: fmt.Sprint(g, "-", i)})
				case 3:
					rdb.ZRem(ctx, "idx", fmt.Sprint(i%2000), fmt.Sprint(g, "-", i-3))
				case 4:
					rdb.Eval(ctx, `redis.call('HINCRBY', KEYS[1], 'n', 1); redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])`, []string{k, "idx"}, i)
				}
			}
		}()
	}
	for range 5 {
		must(t, e.Compact())
	}
	close(stop)
	wg.Wait()
	want := dump(t, e)
	if e.Stats().Compactions < 5 {
		t.Fatalf("%d compactions", e.Stats().Compactions)
	}
	e = reopen(t, e, dir, nil)
	defer e.Close()
	if got := dump(t, e); got != want {
		t.Errorf("after compactions under load and a restart, the data set differs:\n%s", diff(got, want))
	}
}

func diff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	short := func(l string) string {
		if len(l) > 300 {
			return l[:300] + "…"
		}
		return l
	}
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "got:  "+short(l))
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "want: "+short(l))
		}
	}
	return strings.Join(out, "\n")
}

// logFile returns the path of the one log in dir.
func logFile(t *testing.T, dir string) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "store-*.log"))
	if len(logs) != 1 {
		t.Fatalf("logs: %v", logs)
	}
	return logs[0]
}

func TestTornTail(t *testing.T) {
	for _, c := range []struct {
		name string
		tear func(b []byte, lastBatch int) []byte
		kept int64 // of the 5 keys written
	}{
		{"half a batch", func(b []byte, last int) []byte { return b[:last+(len(b)-last)/2] }, 4},
		{"header only", func(b []byte, last int) []byte { return b[:last+5] }, 4},
		{"garbage after", func(b []byte, last int) []byte { return append(b, 0x13, 0, 0, 0, 1, 2, 3, 4, 5) }, 5},
		{"zeros after", func(b []byte, last int) []byte { return append(b, make([]byte, 4096)...) }, 5},
		{"flipped byte in the last batch", func(b []byte, last int) []byte { b[len(b)-1] ^= 1; return b }, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			e := open(t, dir, nil, nil)
			ctx := context.Background()
			var last int
			for i := range 5 {
				last = int(e.Stats().LogBytes)
				must(t, e.Client().Set(ctx, fmt.Sprint("k", i), "v", 0).Err())
			}
			must(t, e.Close())
			path := logFile(t, dir)
			b, err := os.ReadFile(path)
			must(t, err)
			torn := c.tear(slices.Clone(b), last)
			must(t, os.WriteFile(path, torn, 0o600))

			log := &syncbuf.Buffer{}
			e = open(t, dir, log, nil)
			defer e.Close()
			if n := e.Client().Exists(ctx, "k0", "k1", "k2", "k3", "k4").Val(); n != c.kept {
				t.Errorf("%d keys after the torn write, want %d", n, c.kept)
			}
			if !strings.Contains(log.String(), "dropped an incomplete write") {
				t.Errorf("no warning:\n%s", log)
			}
			// The log takes writes again, and they survive.
			must(t, e.Client().Set(ctx, "after", "v", 0).Err())
			e = reopen(t, e, dir, nil)
			if e.Client().Exists(ctx, "after").Val() != 1 {
				t.Error("a write after the repair was lost")
			}
			e.Close()
		})
	}
}

func TestDamageStopsStart(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir, nil, nil)
	ctx := context.Background()
	var second int
	for i := range 3 {
		if i == 1 {
			second = int(e.Stats().LogBytes)
		}
		must(t, e.Client().Set(ctx, fmt.Sprint("k", i), "v", 0).Err())
	}
	must(t, e.Close())
	path := logFile(t, dir)
	b, _ := os.ReadFile(path)
	b[second+batchHeader+2] ^= 0xff // inside the second of three batches
	os.WriteFile(path, b, 0o600)
	_, err := Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Base(path)) || !strings.Contains(err.Error(), fmt.Sprintf("byte %d", second)) {
		t.Fatalf("Open(damaged log) = %v, want an error naming the file and the offset", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir, nil, nil)
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second Open = %v, want ErrLocked naming this process", err)
	}
	e.Close()
	e = open(t, dir, nil, nil)
	e.Close()
}

func TestDiskFailureRefusesLaterWrites(t *testing.T) {
	e := open(t, t.TempDir(), nil, nil)
	defer e.Close()
	ctx := context.Background()
	rdb := e.Client()
	must(t, rdb.Set(ctx, "a", "1", 0).Err())
	e.wal.mu.Lock()
	e.wal.f.Close() // the next write fails
	e.wal.mu.Unlock()
	if err := rdb.Set(ctx, "b", "2", 0).Err(); err == nil || !strings.Contains(err.Error(), "saving to") {
		t.Fatalf("write on a failed disk = %v", err)
	}
	if err := rdb.Set(ctx, "c", "3", 0).Err(); err == nil {
		t.Fatal("a later write was accepted")
	}
	if rdb.Exists(ctx, "c").Val() != 0 {
		t.Error("the refused write changed the data set")
	}
	if err := rdb.Get(ctx, "a").Err(); err != nil {
		t.Errorf("reads fail too: %v", err)
	}
}

func TestMigrateLegacySnapshot(t *testing.T) {
	dir := t.TempDir()
	binary := string([]byte{0, 0xff, 'x'})
	var buf bytes.Buffer
	must(t, gob.NewEncoder(&buf).Encode(legacy{
		Strings: map[string]string{"s": "v"},
		Hashes:  map[string]map[string]string{ns + ":key:ak_1": {"n": "name", "h": binary}},
		ZSets:   map[string]map[string]float64{ns + ":keys": {"ak_1": 1700000000000}},
		Sets:    map[string][]string{"set": {"a", "b"}},
		Lists:   map[string][]string{"l": {"1", "2"}},
	}))
	must(t, os.WriteFile(filepath.Join(dir, legacySnapshot), buf.Bytes(), 0o600))
	e := open(t, dir, nil, nil)
	want := dump(t, e)
	for _, line := range []string{`"s" s "v"`, `"l" l "" ["1" "2"]`, `"keygate:keys" z "" ["ak_1:1.7e+12"]`, `"h=\x00\xffx"`} {
		if !strings.Contains(want, line) {
			t.Errorf("migrated data lacks %s:\n%s", line, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, legacySnapshot)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("keygate.snapshot still there: %v", err)
	}
	e = reopen(t, e, dir, nil)
	defer e.Close()
	if got := dump(t, e); got != want {
		t.Errorf("after a second start:\n%s\nwant:\n%s", got, want)
	}
}

func TestCorruptLegacySnapshotRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, legacySnapshot), []byte("not a snapshot"), 0o600)
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), legacySnapshot) {
		t.Fatalf("Open(corrupt) = %v, want an error naming the snapshot", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
