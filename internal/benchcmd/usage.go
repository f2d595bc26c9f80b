package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
)

// meteredParams is a key whose limits and credits never refuse in a
// benchmark, so that every request pays the whole check.
func meteredParams(i int) keystore.CreateParams {
	p := keyParams(i, subjectOf(i))
	p.RateLimits = []keystore.RateLimit{{Name: "default", Limit: 1_000_000_000, DurationMs: 1000}}
	p.Credits = &keystore.Credits{Remaining: 1_000_000_000_000}
	return p
}

// usageControl measures what rate limits and credits cost: the sidecar
// with a metered key against the same sidecar with a plain key, the
// in-process verification of a metered key, and the usage history's
// writes.
func usageControl(ctx context.Context, e *env) ([]row, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	in, err := e.instance(ctx, keystore.Options{}, keystore.VerifierOptions{}, 0)
	if err != nil {
		return nil, err
	}
	defer in.close()
	plain, err := in.store.Create(ctx, keyParams(0, subjectOf(0)))
	if err != nil {
		return nil, err
	}
	metered, err := in.store.Create(ctx, meteredParams(1))
	if err != nil {
		return nil, err
	}
	var rows []row

	// The sidecar, one key against the other, in turns.
	var srvs servers
	defer srvs.close()
	app, err := srvs.start(sidecar.NewServer("", upstream))
	if err != nil {
		return nil, err
	}
	px, err := sidecar.NewProxy(in.v, sidecar.ProxyOptions{Upstream: &url.URL{Scheme: "http", Host: app}})
	if err != nil {
		return nil, err
	}
	sc, err := srvs.start(sidecar.NewProxyServer("", px))
	if err != nil {
		return nil, err
	}
	b, kr, err := compareLoad(
		newTarget("plain key", sc, "/orders/1", http.Header{"Authorization": {"Bearer " + plain.Secret}}),
		newTarget("metered key", sc, "/orders/1", http.Header{"Authorization": {"Bearer " + metered.Secret}}),
		e.cfg.conns, e.cfg.runs, e.cfg.round)
	if err != nil {
		return nil, err
	}
	kRPS, bRPS, kP99, bP99, rr, pr := loadRow(b, kr)
	rows = append(rows, row{
		measure:  fmt.Sprintf("sidecar with a metered key, %d connections", e.cfg.conns),
		keygate:  fmt.Sprintf("%s, p99 %s", rate(kRPS), dur(kP99)),
		baseline: fmt.Sprintf("%s, p99 %s (same sidecar, a key without limits)", rate(bRPS), dur(bP99)),
		compare:  fmt.Sprintf("%.0f%% throughput, p99 %.2f×", rr*100, pr),
		goal:     "≥ 70%",
		verdict:  verdict(rr >= 0.70),
		note: fmt.Sprintf("one sidecar, the same GET with a key that has a rate limit and credits (set never to refuse: "+
			"every request runs the one metering script) and with a key that has neither, %d connections, %s per round, "+
			"taking turns; medians of %d rounds.", e.cfg.conns, e.cfg.round, e.cfg.runs),
	})

	// In process: ns per verification, and commands per verification.
	counter := &commandCount{}
	in.rdb.AddHook(counter)
	var failed error
	run := func(k *keystore.APIKey) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				if _, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
					failed = err
				}
			}
		}
	}
	before := counter.n.Load()
	r := testing.Benchmark(run(metered))
	perVerify := float64(counter.n.Load()-before) / float64(r.N)
	plainR := testing.Benchmark(run(plain))
	if failed != nil {
		return nil, failed
	}
	rows = append(rows, row{
		measure:  "metered verify, in process",
		keygate:  fmt.Sprintf("%s/op, %.2f Redis commands per verification", dur(nsPerOp(r)/1e9), perVerify),
		baseline: fmt.Sprintf("%s/op (a cached key without limits: no command)", dur(nsPerOp(plainR)/1e9)),
		goal:     "report; 1 command",
		verdict:  "report",
		note: "`Verifier.Verify` of one cached key with a rate limit and credits, one goroutine, `testing.Benchmark`; " +
			"a go-redis hook counts the commands its client sends meanwhile (the heartbeat's few included).",
	})

	// The usage history's writes: one pipeline per flush.
	keys, err := createKeys(ctx, in.store, lastUsedKeys, 16, subjectOf)
	if err != nil {
		return nil, err
	}
	hist := &historyWrites{prefix: in.store.Namespace() + ":usage:"}
	in.rdb.AddHook(hist)
	secs := max(e.cfg.runs, 3)
	done, took, err := pace(ctx, in.v, keys, lastUsedRate, time.Duration(secs)*time.Second)
	if err != nil {
		return nil, err
	}
	time.Sleep(1100 * time.Millisecond) // the last flush of the period
	pipes, most := hist.pipelines.Load(), hist.most.Load()
	rows = append(rows, row{
		measure:  fmt.Sprintf("usage-history writes, %s verifications of %d keys", rate(lastUsedRate), lastUsedKeys),
		keygate:  fmt.Sprintf("%d pipelines in %.0f s, at most %d increments in one (%s verifications achieved)", pipes, took.Seconds()+1, most, rate(float64(done)/took.Seconds())),
		baseline: "—",
		goal:     "one pipeline per flush",
		verdict:  verdict(pipes > 0 && float64(pipes) <= took.Seconds()+2),
		note: fmt.Sprintf("one verifier (default 1 s flush) verifies %d cached keys in turn at %d/s for %d s; a go-redis hook "+
			"counts the pipelines that write usage buckets, and the most HINCRBYs in one (3 per key and minute: minute, hour "+
			"and day buckets).", lastUsedKeys, lastUsedRate, secs),
	})
	return rows, nil
}

// pace verifies keys in turn at perSecond from two goroutines for d.
func pace(ctx context.Context, v *keystore.Verifier, keys []*keystore.APIKey, perSecond int, d time.Duration) (int64, time.Duration, error) {
	const workers = 2
	var done atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i, n := w, 0
			for el := time.Since(start); el < d; el = time.Since(start) {
				for due := int(el.Seconds() * float64(perSecond) / workers); n < due; n++ {
					if _, err := v.Verify(ctx, keys[i%len(keys)].Secret, keystore.SourceMiddleware); err != nil {
						failed.CompareAndSwap(nil, &err)
						return
					}
					i += workers
				}
				time.Sleep(200 * time.Microsecond)
			}
			done.Add(int64(n))
		}()
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return 0, 0, *p
	}
	return done.Load(), time.Since(start), nil
}

// commandCount is a go-redis hook that counts commands.
type commandCount struct{ n atomic.Int64 }

func (h *commandCount) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *commandCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *commandCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

// historyWrites is a go-redis hook that counts the pipelines writing usage
// buckets, and the most increments in one.
type historyWrites struct {
	prefix          string
	pipelines, most atomic.Int64
}

func (h *historyWrites) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *historyWrites) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "hincrby" {
			return errors.New("benchcmd: a usage bucket written outside a pipeline")
		}
		return next(ctx, cmd)
	}
}
func (h *historyWrites) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var n int64
		for _, c := range cmds {
			if key, ok := c.Args()[1].(string); c.Name() == "hincrby" && ok && strings.HasPrefix(key, h.prefix) {
				n++
			}
		}
		if n > 0 {
			h.pipelines.Add(1)
			for m := h.most.Load(); n > m && !h.most.CompareAndSwap(m, n); m = h.most.Load() {
			}
		}
		return next(ctx, cmds)
	}
}
