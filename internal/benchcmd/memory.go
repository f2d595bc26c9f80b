package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
)

// bigSubject owns the keys of the list row.
const bigSubject = "user_2xUq8ZtRk9vLbN3mWc4eBIGBIGB"

// memoryAndList stores -keys keys, up to 10,000 of them under one subject
// and the others 100 per subject, and reports what a key costs in Redis
// and how long listing that subject's first page takes.
func memoryAndList(ctx context.Context, e *env) ([]row, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	rdb := e.client(64)
	defer rdb.Close()
	store, err := keystore.New(rdb, keystore.Options{LastUsedFlush: -1})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	n := e.cfg.keys
	big := min(10_000, n)
	before, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	keys, err := createKeys(ctx, store, n, 32, func(i int) string {
		if i < big {
			return bigSubject
		}
		return subjectOf(1 + (i-big)/100)
	})
	if err != nil {
		return nil, err
	}
	progress("memory: %d keys created in %s", n, time.Since(t0).Round(100*time.Millisecond))
	after, err := usedMemory(ctx, rdb)
	if err != nil {
		return nil, err
	}

	// MEMORY USAGE of a sample of records, and of every index.
	ns := store.Namespace()
	sample := min(n, 1000)
	sampled := make([]string, sample)
	for i := range sampled {
		sampled[i] = ns + ":key:" + keys[i*n/sample].ID
	}
	recMedian, subIdxBytes, allIdxBytes, _, err := keyBytes(ctx, rdb, ns, sampled)
	if err != nil {
		return nil, err
	}
	perKey := recMedian + (subIdxBytes+allIdxBytes)/float64(n)
	perKeyInfo := float64(after-before) / float64(n)

	// A key in use also holds last_used_at: the same sample, once used.
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range sampled {
			p.HSet(ctx, id, "lu", time.Now().UnixMilli())
		}
		return nil
	}); err != nil {
		return nil, err
	}
	used, err := memoryUsage(ctx, rdb, sampled)
	if err != nil {
		return nil, err
	}

	// Listing the big subject's first page: as the API does by default
	// (valid keys only, which reads every record of the subject), and with
	// include_invalid (the index alone gives the page and the count).
	calls := 3 * e.cfg.runs
	list := func(p keystore.ListParams) ([]time.Duration, error) {
		var ds []time.Duration
		for i := 0; i < calls; i++ {
			t := time.Now()
			l, err := store.List(ctx, p)
			if err != nil {
				return nil, err
			}
			ds = append(ds, time.Since(t))
			if len(l.Data) != min(10, big) || l.TotalCount != big {
				return nil, fmt.Errorf("listing gave %d keys of %d, want 10 of %d", len(l.Data), l.TotalCount, big)
			}
		}
		slices.Sort(ds)
		return ds, nil
	}
	valid, err := list(keystore.ListParams{Subject: bigSubject, Limit: 10})
	if err != nil {
		return nil, err
	}
	all, err := list(keystore.ListParams{Subject: bigSubject, Limit: 10, IncludeInvalid: true})
	if err != nil {
		return nil, err
	}
	return []row{{
		measure: fmt.Sprintf("memory per stored key, %dk keys", n/1000),
		keygate: fmt.Sprintf("%.0f bytes: record %.0f (%.0f once used), subject indexes %.0f, global indexes %.0f (used_memory grew %.0f bytes per key)",
			perKey, recMedian, median(used), subIdxBytes/float64(n), allIdxBytes/float64(n), perKeyInfo),
		baseline: "—",
		goal:     "≤ 600 bytes",
		verdict:  verdict(perKey <= 600),
		note: fmt.Sprintf("%d keys of a typical shape (a 17-character name, a 32-character subject and creator, two scopes, "+
			"claims `{\"plan\":\"pro\"}`, no description, no expiry), %d under one subject and 100 under each other; "+
			"`MEMORY USAGE … SAMPLES 0` of %d records (median; again once they hold a last_used_at) plus every index sorted set (valid, invalid and expiry, per subject and global) "+
			"divided by the number of keys. Redis rounds each allocation up to a jemalloc size class (…, 320, 384, 448 bytes), "+
			"so a record's size moves in steps of 64 bytes. "+
			"used_memory (`INFO memory`) before and after, divided by the number of keys, adds Redis's own keyspace overhead.",
			n, big, sample),
	}, {
		measure:  fmt.Sprintf("list a subject with %dk keys, page of 10", big/1000),
		keygate:  fmt.Sprintf("p50 %s, p99 %s (default: valid keys only); p50 %s, p99 %s (include_invalid)", dur(percentile(valid, 50).Seconds()), dur(percentile(valid, 99).Seconds()), dur(percentile(all, 50).Seconds()), dur(percentile(all, 99).Seconds())),
		baseline: "—",
		goal:     "report",
		verdict:  "report",
		note: fmt.Sprintf("`Store.List` of the first page of 10 of the subject with %d keys, %d calls each, one at a time: "+
			"the page and the count come from the subject's valid index (the API's default) or from its valid and invalid "+
			"indexes merged (include_invalid), and the page's records from one pipeline. make bench-scale lists at a million keys.", big, calls),
	}}, nil
}

// keyBytes returns MEMORY USAGE … SAMPLES 0 of the records named
// (median), and summed over the listing indexes of namespace ns, the
// subjects' and the global ones, with how many subject index sets there
// are.
func keyBytes(ctx context.Context, rdb *redis.Client, ns string, records []string) (record, subjects, global float64, sets int, err error) {
	recSizes, err := memoryUsage(ctx, rdb, records)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	subIdx, err := scanKeys(ctx, rdb, ns+":sub:*", 0)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	subSizes, err := memoryUsage(ctx, rdb, subIdx)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	allSizes, err := memoryUsage(ctx, rdb, []string{ns + ":{all}:valid", ns + ":{all}:invalid", ns + ":{all}:expiry"})
	if err != nil {
		return 0, 0, 0, 0, err
	}
	return median(recSizes), sum(subSizes), sum(allSizes), len(subIdx), nil
}

// usedMemory returns Redis's used_memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no used_memory in INFO memory")
}

// scanKeys returns the keys matching pattern, at most limit of them (0:
// every one).
func scanKeys(ctx context.Context, rdb *redis.Client, pattern string, limit int) ([]string, error) {
	var out []string
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) && (limit == 0 || len(out) < limit) {
		out = append(out, iter.Val())
	}
	return out, iter.Err()
}
