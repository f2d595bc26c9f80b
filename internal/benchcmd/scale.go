package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
)

// The measures of make bench-scale (-scale): listing, memory and creates
// at a million keys, and a fleet of verifiers starting cold under load.
// They share one data set, built first.
var scaleMeasures = []measure{
	{"build", buildDataSet},
	{"list", scaleList},
	{"query", scaleQuery},
	{"memory", scaleMemory},
	{"create", scaleCreate},
	{"cold-start", coldStart},
	{"expiry", scaleExpiry}, // last: it moves keys out of the valid indexes
}

// dataSet is what buildDataSet leaves for the other scale measures.
type dataSet struct {
	rdb    *redis.Client
	store  *keystore.Store
	n, big int
	// memBefore is used_memory before the data set was written.
	memBefore int64
}

// scaleSet is the data set of this run, built once by buildDataSet.
var scaleSet *dataSet

// scaleShape describes the data set, for the notes.
func scaleShape(n, big int) string {
	return fmt.Sprintf("%d keys: %d of one subject, the others 10 per subject (%d subjects); of every ten keys one is revoked "+
		"and one has an expiration, half of those already past; the typical shape of make bench otherwise "+
		"(a 17-character name, a 32-character subject and creator, two scopes, claims `{\"plan\":\"pro\"}`)",
		n, big, (n-big+9)/10+1)
}

// buildDataSet writes the data set with pipelines, as the listing indexes
// of the earlier layout (the records, <ns>:keys and <ns>:subject:<s>),
// and has Store.Migrate move them to the current indexes: the figures are
// the pipelined write and the migration.
func buildDataSet(ctx context.Context, e *env) ([]row, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	n := e.cfg.scaleKeys
	big := min(100_000, n/10)
	rdb := e.client(64)
	store, err := keystore.New(rdb, keystore.Options{LastUsedFlush: -1})
	if err != nil {
		return nil, err
	}
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	ns := store.Namespace()
	now := time.Now().UnixMilli()
	digest := make([]byte, 32)
	rng := mrand.New(mrand.NewPCG(21, 1))
	t0 := time.Now()
	const batch = 2000
	nonBig := 0
	for start := 0; start < n; start += batch {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < min(start+batch, n); i++ {
				subject := bigSubject
				if i%(n/big) != 0 || i/(n/big) >= big {
					subject = subjectOf(1 + nonBig/10)
					nonBig++
				}
				created := now - int64(n-i)*10 // ten milliseconds apart, the last one now
				rand.Read(digest)              // no secret: these keys are listed, never verified
				id := fmt.Sprintf("ak_%016x%016x", rng.Uint64(), uint64(i))
				f := []any{
					"n", fmt.Sprintf("deploy key %07d", i), "s", subject,
					"ca", created, "ua", created, "h", string(digest),
					"sc", "reports:read reports:write", "c", `{"plan":"pro"}`, "cb", "user_2xUq8ZtRk9vLbN3mWc4eYh7TpQs",
				}
				switch rng.IntN(10) {
				case 0:
					f = append(f, "r", "1")
				case 1:
					exp := now + 24*3600*1000 // tomorrow
					if rng.IntN(2) == 0 {
						exp = created + 1000 // long past
					}
					f = append(f, "e", exp)
				}
				p.HSet(ctx, ns+":key:"+id, f...)
				z := redis.Z{Score: float64(created), Member: id}
				p.ZAdd(ctx, ns+":keys", z)
				p.ZAdd(ctx, ns+":subject:"+subject, z)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("writing the data set: %w", err)
		}
	}
	wrote := time.Since(t0)
	progress("build: %d keys written in %s", n, wrote.Round(time.Second))
	t1 := time.Now()
	moved, err := store.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrating the data set: %w", err)
	}
	migrated := time.Since(t1)
	progress("build: %d keys migrated in %s", moved, migrated.Round(time.Second))
	scaleSet = &dataSet{rdb: rdb, store: store, n: n, big: big, memBefore: before}
	return []row{{
		measure:  fmt.Sprintf("data set of %s keys: pipelined write, then `keygate store migrate`", thousands(n)),
		keygate:  fmt.Sprintf("written in %s (%s keys/s); migrated in %s (%s keys/s)", dur(wrote.Seconds()), perSecond(float64(n)/wrote.Seconds()), dur(migrated.Seconds()), perSecond(float64(moved)/migrated.Seconds())),
		baseline: "—",
		goal:     "report",
		verdict:  "report",
		note: scaleShape(n, big) + ". The records and the earlier layout's indexes are written with pipelines of 2,000 keys " +
			"from one connection; `Store.Migrate` then moves every key to the current indexes (1,000 keys per batch: " +
			"their records in one pipeline, their subjects' indexes in a second, the global ones in a third).",
	}}, nil
}

// needSet fails a scale measure run without the data set.
func needSet() (*dataSet, error) {
	if scaleSet == nil {
		return nil, fmt.Errorf("no data set: the build measure did not run")
	}
	return scaleSet, nil
}

// timeLists calls List calls times with params from p and returns the
// sorted durations and the last answer.
func timeLists(ctx context.Context, s *keystore.Store, calls int, p func(i int) keystore.ListParams) ([]time.Duration, *keystore.KeyList, error) {
	ds := make([]time.Duration, 0, calls)
	var last *keystore.KeyList
	for i := range calls {
		t := time.Now()
		l, err := s.List(ctx, p(i))
		if err != nil {
			return nil, nil, err
		}
		ds = append(ds, time.Since(t))
		last = l
	}
	slices.Sort(ds)
	return ds, last, nil
}

// p50p99 formats the median and 99th percentile of sorted durations.
func p50p99(ds []time.Duration) string {
	return fmt.Sprintf("p50 %s, p99 %s", dur(percentile(ds, 50).Seconds()), dur(percentile(ds, 99).Seconds()))
}

// scaleList times the listings of one page of 10: the subject with 100k
// keys and every subject, valid keys only (the default) and with invalid
// ones, at the first page and at random depths.
func scaleList(ctx context.Context, e *env) ([]row, error) {
	ds, err := needSet()
	if err != nil {
		return nil, err
	}
	s := ds.store
	const calls = 400
	rng := mrand.New(mrand.NewPCG(21, 21))
	var rows []row
	var worst time.Duration
	for _, c := range []struct {
		label   string
		subject string
	}{{fmt.Sprintf("a subject with %sk keys", thousands(ds.big/1000)), bigSubject}, {fmt.Sprintf("all %s keys", thousands(ds.n)), ""}} {
		var cells []string
		for _, invalid := range []bool{false, true} {
			p := keystore.ListParams{Subject: c.subject, IncludeInvalid: invalid, Limit: 10}
			first, l, err := timeLists(ctx, s, calls, func(int) keystore.ListParams { return p })
			if err != nil {
				return nil, err
			}
			total := l.TotalCount
			deep, _, err := timeLists(ctx, s, calls, func(int) keystore.ListParams {
				q := p
				q.Offset = rng.IntN(max(total-10, 1))
				return q
			})
			if err != nil {
				return nil, err
			}
			what := "default (valid only)"
			if invalid {
				what = "include_invalid"
			} else {
				worst = max(worst, percentile(first, 99), percentile(deep, 99))
			}
			cells = append(cells, fmt.Sprintf("%s, total_count %s: first page %s; random page %s", what, thousands(total), p50p99(first), p50p99(deep)))
		}
		rows = append(rows, row{
			measure:  "list " + c.label + ", page of 10",
			keygate:  strings.Join(cells, "; "),
			baseline: "—",
			goal:     "default p99 ≤ 5 ms",
			verdict:  verdict(worst <= 5*time.Millisecond),
		})
	}
	rows[len(rows)-1].note = fmt.Sprintf("`Store.List` in process, one call at a time, %d calls per cell: the first page, and pages at random offsets "+
		"over the whole count. Each call is a journal check, one script on the scope's indexes, and one pipeline of the page's 10 records.", calls)
	return rows, nil
}

// scaleExpiry times the first default listings after many keys expired
// at once: those of a store whose clock runs two days ahead, for which
// every key of the data set expiring "tomorrow" has expired.
func scaleExpiry(ctx context.Context, e *env) ([]row, error) {
	ds, err := needSet()
	if err != nil {
		return nil, err
	}
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	s, err := keystore.New(ds.rdb, keystore.Options{LastUsedFlush: -1, Now: later})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ns := s.Namespace()
	due := strconv.FormatInt(later().UnixMilli(), 10)
	var cells []string
	for _, c := range []struct{ subject, expiry, label string }{
		{bigSubject, ns + ":sub:{" + bigSubject + "}:expiry", fmt.Sprintf("the subject of %sk keys", thousands(ds.big/1000))},
		{"", ns + ":{all}:expiry", "every subject"},
	} {
		n, err := ds.rdb.ZCount(ctx, c.expiry, "-inf", due).Result()
		if err != nil {
			return nil, err
		}
		t := time.Now()
		if _, err := s.List(ctx, keystore.ListParams{Subject: c.subject, Limit: 10}); err != nil {
			return nil, err
		}
		first := time.Since(t)
		next, _, err := timeLists(ctx, s, 50, func(int) keystore.ListParams { return keystore.ListParams{Subject: c.subject, Limit: 10} })
		if err != nil {
			return nil, err
		}
		cells = append(cells, fmt.Sprintf("%s: %s expired keys moved by the first listing in %s; the next ones p50 %s",
			c.label, thousands(int(n)), dur(first.Seconds()), dur(percentile(next, 50).Seconds())))
	}
	return []row{{
		measure:  "first listing after many keys expired at once",
		keygate:  strings.Join(cells, "; "),
		baseline: "—",
		goal:     "report",
		verdict:  "report",
		note: "Every key of the data set that expires \"tomorrow\" has expired for a store whose clock runs two days ahead: its first default " +
			"listing of a scope moves them from the valid index to the invalid one, 1,000 per script call, before reading the page. " +
			"Keys that expire as time goes are moved a few at a time by whichever listing comes next.",
	}}, nil
}

// scaleQuery times listings with a name query, which read the name of
// every key of their scope.
func scaleQuery(ctx context.Context, e *env) ([]row, error) {
	ds, err := needSet()
	if err != nil {
		return nil, err
	}
	var cells []string
	for _, c := range []struct {
		subject string
		calls   int
	}{{bigSubject, 10}, {"", 3}} {
		times, l, err := timeLists(ctx, ds.store, c.calls, func(int) keystore.ListParams {
			return keystore.ListParams{Subject: c.subject, Query: "KEY 00077", Limit: 10}
		})
		if err != nil {
			return nil, err
		}
		scope := fmt.Sprintf("subject of %sk keys", thousands(ds.big/1000))
		if c.subject == "" {
			scope = "every subject"
		}
		cells = append(cells, fmt.Sprintf("%s: p50 %s (%d matches)", scope, dur(percentile(times, 50).Seconds()), l.TotalCount))
	}
	return []row{{
		measure:  "list with a name query, page of 10",
		keygate:  strings.Join(cells, "; "),
		baseline: "—",
		goal:     "report",
		verdict:  "report",
		note: "`Store.List` with `query` \"KEY 00077\" (case-insensitive substring), valid keys only: it walks the scope's valid index " +
			"and reads the name and state of 1,000 keys per round trip (HMGET), then the records of the page. Its cost grows with " +
			"the number of keys of the scope; name a subject to bound it.",
	}}, nil
}

// scaleMemory reports what a key costs in Redis with the new indexes.
func scaleMemory(ctx context.Context, e *env) ([]row, error) {
	ds, err := needSet()
	if err != nil {
		return nil, err
	}
	rdb, ns := ds.rdb, ds.store.Namespace()
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	records, err := scanKeys(ctx, rdb, ns+":key:*", 1000)
	if err != nil {
		return nil, err
	}
	rec, subBytes, allBytes, sets, err := keyBytes(ctx, rdb, ns, records)
	if err != nil {
		return nil, err
	}
	sub, all := subBytes/float64(ds.n), allBytes/float64(ds.n)
	perKey := rec + sub + all
	return []row{{
		measure: fmt.Sprintf("memory per stored key, %s keys", thousands(ds.n)),
		keygate: fmt.Sprintf("%.0f bytes: record %.0f, subject indexes %.0f, global indexes %.0f (used_memory grew %.0f bytes per key)",
			perKey, rec, sub, all, float64(after-ds.memBefore)/float64(ds.n)),
		baseline: "—",
		goal:     "≤ 600 bytes",
		verdict:  verdict(perKey <= 600),
		note: scaleShape(ds.n, ds.big) + fmt.Sprintf(". `MEMORY USAGE … SAMPLES 0` of %d records (median) plus every index sorted set "+
			"(the %d valid, invalid and expiry sets of the subjects, and the global ones) divided by the number of keys; used_memory "+
			"(`INFO memory`) before the data set and after its migration adds Redis's keyspace overhead.", len(records), sets),
	}}, nil
}

// scaleCreate measures Store.Create on top of the data set.
func scaleCreate(ctx context.Context, e *env) ([]row, error) {
	ds, err := needSet()
	if err != nil {
		return nil, err
	}
	const conc, n = 32, 20_000
	t := time.Now()
	if _, err := createKeys(ctx, ds.store, n, conc, func(i int) string { return subjectOf(2_000_000 + i/10) }); err != nil {
		return nil, err
	}
	took := time.Since(t)
	return []row{{
		measure:  fmt.Sprintf("create, %d goroutines, on %s keys", conc, thousands(ds.n)),
		keygate:  perSecond(float64(n)/took.Seconds()) + " keys/s",
		baseline: "—",
		goal:     "report",
		verdict:  "report",
		note: fmt.Sprintf("%d `Store.Create` calls of the typical shape, 10 per subject, from %d goroutines on a pool of 64 connections: "+
			"each is 4 round trips in turn (journal, record, subject indexes, global indexes).", n, conc),
	}}, nil
}

// memoryUsage returns MEMORY USAGE … SAMPLES 0 of keys, pipelined: 0 for
// a key that does not exist (an index with nothing in it).
func memoryUsage(ctx context.Context, rdb *redis.Client, keys []string) ([]float64, error) {
	out := make([]float64, 0, len(keys))
	for start := 0; start < len(keys); start += 1000 {
		part := keys[start:min(start+1000, len(keys))]
		cmds := make([]*redis.IntCmd, len(part))
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range part {
				cmds[i] = p.MemoryUsage(ctx, k, 0)
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for _, c := range cmds {
			out = append(out, float64(c.Val()))
		}
	}
	return out, nil
}

func sum(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s
}

// perSecond is rate without its "/s", for a unit of one's own.
func perSecond(r float64) string { return strings.TrimSuffix(rate(r), "/s") }

// thousands formats n with commas.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
