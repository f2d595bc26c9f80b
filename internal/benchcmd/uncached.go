package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/keystore"
)

// uncachedVerify compares the throughput of verifications that each read
// Redis (cache off) with redis-benchmark's GET on the same server, over the
// same number of connections. A go-redis GET loop, also over as many
// connections, tells the client's share of the gap.
func uncachedVerify(ctx context.Context, e *env) ([]row, error) {
	bench, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return nil, errors.New("redis-benchmark is not on PATH (Debian: apt-get install -y redis-tools)")
	}
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	n := e.cfg.redisConns
	in, err := e.instance(ctx, keystore.Options{}, keystore.VerifierOptions{CacheTTL: -1}, n)
	if err != nil {
		return nil, err
	}
	defer in.close()
	keys, err := createKeys(ctx, in.store, 256, 16, func(int) string { return subjectOf(0) })
	if err != nil {
		return nil, err
	}
	if err := in.rdb.Set(ctx, "bench:get", "xyz", 0).Err(); err != nil {
		return nil, err
	}
	d := e.cfg.round
	verify := func(ctx context.Context, i int) error {
		_, err := in.v.Verify(ctx, keys[i%len(keys)].Secret, keystore.SourceMiddleware)
		return err
	}
	get := func(ctx context.Context, _ int) error { return in.rdb.Get(ctx, "bench:get").Err() }
	// Warm the pool: n connections open before anything is measured.
	if _, err := closedLoop(ctx, n, d/4, verify); err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(e.redisAddr)
	var kg, rb, gr []float64
	for i := 0; i < e.cfg.runs; i++ {
		r, err := closedLoop(ctx, n, d, verify)
		if err != nil {
			return nil, err
		}
		kg = append(kg, r)
		if r, err = redisBenchmarkGet(ctx, bench, host, port, n, int(max(r*d.Seconds()*2, 20_000))); err != nil {
			return nil, err
		}
		rb = append(rb, r)
		if r, err = closedLoop(ctx, n, d/2, get); err != nil {
			return nil, err
		}
		gr = append(gr, r)
	}
	ratio := median(ratios(kg, rb))
	return []row{{
		measure:  fmt.Sprintf("uncached verify, %d connections", n),
		keygate:  rate(median(kg)),
		baseline: fmt.Sprintf("%s (`redis-benchmark -t get -c %d`)", rate(median(rb)), n),
		compare:  fmt.Sprintf("%.0f%%", ratio*100),
		goal:     "≥ 70%",
		verdict:  verdict(ratio >= 0.70),
		note: fmt.Sprintf("`Verifier.Verify` with the cache off (`CacheTTL: -1`: one HGETALL per call) of 256 keys in turn, "+
			"from %d goroutines on a go-redis pool of %d, for %s per run; redis-benchmark (C, event loop) GETs a 3-byte value "+
			"over %d connections of the same server. For the client's share: a go-redis GET loop over the same pool "+
			"does %s, so keygate reaches %.0f%% of what go-redis itself gets from this server.",
			n, n, d, n, rate(median(gr)), median(ratios(kg, gr))*100),
	}}, nil
}

// closedLoop runs op from conc goroutines, each calling it again as soon as
// it returns, for d, and returns the calls per second. It fails on the
// first error.
func closedLoop(ctx context.Context, conc int, d time.Duration, op func(ctx context.Context, i int) error) (float64, error) {
	var done atomic.Int64
	var first atomic.Pointer[error]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := w; time.Now().Before(deadline); i += conc {
				if err := op(ctx, i); err != nil {
					first.CompareAndSwap(nil, &err)
					cancel()
					break
				}
				n++
			}
			done.Add(int64(n))
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if p := first.Load(); p != nil {
		return 0, *p
	}
	return float64(done.Load()) / took.Seconds(), nil
}

// redisBenchmarkGet runs redis-benchmark's GET test and returns its
// requests per second.
func redisBenchmarkGet(ctx context.Context, bin, host, port string, conns, requests int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "-t", "get",
		"-c", strconv.Itoa(conns), "-n", strconv.Itoa(requests), "--csv").Output()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark: %w", err)
	}
	recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark output: %w", err)
	}
	for _, rec := range recs {
		if len(rec) >= 2 && rec[0] == "GET" {
			return strconv.ParseFloat(rec[1], 64)
		}
	}
	return 0, fmt.Errorf("redis-benchmark output has no GET line: %q", out)
}
