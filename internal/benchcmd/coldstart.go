package main

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
)

// Cold start: coldVerifiers verifiers start together while coldRate
// verifications per second of coldKeys distinct keys arrive.
const (
	coldVerifiers = 20
	coldRate      = 5000
	coldKeys      = 10_000
)

// coldSecond is what happened to the verifications scheduled in one second.
type coldSecond struct {
	requests, errors, repeats atomic.Int64
	mu                        sync.Mutex
	latencies                 []time.Duration
	hits                      float64 // cache hits, from the verifiers' metrics
}

// coldStart creates coldKeys keys on top of the data set, then starts
// coldVerifiers instances (a client, a store and a caching verifier each,
// as separate processes would have) at once and sends them coldRate
// verifications per second, open loop, each of a random key to a random
// instance, for -cold-start. It reports the errors of the first second
// and of the whole run, the latency, when the caches went live, and how
// soon the caches answered the verifications they could: a key an
// instance had verified before (within the cache TTL).
func coldStart(ctx context.Context, e *env) ([]row, error) {
	ds, err := needSet()
	if err != nil {
		return nil, err
	}
	progress("cold-start: creating %d keys", coldKeys)
	keys, err := createKeys(ctx, ds.store, coldKeys, 32, func(i int) string { return subjectOf(3_000_000 + i/10) })
	if err != nil {
		return nil, err
	}
	run := e.cfg.coldStart
	secs := int(run / time.Second)
	seconds := make([]*coldSecond, secs)
	for i := range seconds {
		seconds[i] = &coldSecond{}
	}
	loads := &loadCounter{}

	// The fleet starts: none is ready, none has a cache yet.
	t0 := time.Now()
	fleet := make([]*instance, coldVerifiers)
	regs := make([]*prometheus.Registry, coldVerifiers)
	var startErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range fleet {
		wg.Go(func() {
			regs[i] = prometheus.NewRegistry()
			rdb := e.client(0)
			rdb.AddHook(loads)
			in := &instance{rdb: rdb}
			var err error
			if in.store, err = keystore.New(rdb, keystore.Options{Registerer: regs[i]}); err == nil {
				in.v, err = keystore.NewVerifier(in.store, keystore.VerifierOptions{Registerer: regs[i]})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				startErr = err
				return
			}
			fleet[i] = in
		})
	}
	wg.Wait()
	defer func() {
		for _, in := range fleet {
			if in != nil {
				in.close()
			}
		}
	}()
	if startErr != nil {
		return nil, startErr
	}
	live := make([]time.Duration, coldVerifiers)
	for i, in := range fleet {
		go func() {
			for in.v.Ready(ctx) != nil && time.Since(t0) < run {
				time.Sleep(time.Millisecond)
			}
			live[i] = time.Since(t0)
		}()
	}

	// Open loop: each verification is scheduled at its time, whatever the
	// ones before it are doing; its latency counts from then.
	type job struct {
		at       time.Time
		instance int
		key      int
		repeat   bool
	}
	jobs := make(chan job, coldRate)
	var dropped atomic.Int64
	var workers sync.WaitGroup
	for range 256 {
		workers.Go(func() {
			for j := range jobs {
				s := seconds[int(j.at.Sub(t0)/time.Second)]
				vctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := fleet[j.instance].v.Verify(vctx, keys[j.key].Secret, keystore.SourceSidecar)
				cancel()
				lat := time.Since(j.at)
				s.requests.Add(1)
				if err != nil {
					s.errors.Add(1)
				}
				if j.repeat {
					s.repeats.Add(1)
				}
				s.mu.Lock()
				s.latencies = append(s.latencies, lat)
				s.mu.Unlock()
			}
		})
	}
	hitsAt := func() float64 {
		h := 0.0
		for _, r := range regs {
			h += histogramCount(r, "keygate_verification_duration_seconds", "cache", "hit")
		}
		return h
	}
	rng := mrand.New(mrand.NewPCG(5, 21))
	ttl := 30 * time.Second // the verifiers' default cache TTL
	lastSeen := make(map[[2]int]time.Time)
	sent := 0
	prevHits := hitsAt()
	tick := time.NewTicker(time.Millisecond)
	for second := 0; second < secs; {
		now := <-tick.C
		due := int(float64(coldRate) * now.Sub(t0).Seconds())
		for ; sent < due; sent++ {
			at := t0.Add(time.Duration(sent) * time.Second / coldRate)
			if int(at.Sub(t0)/time.Second) >= secs {
				break
			}
			j := job{at: at, instance: rng.IntN(coldVerifiers), key: rng.IntN(coldKeys)}
			pair := [2]int{j.instance, j.key}
			if seen, ok := lastSeen[pair]; ok && at.Sub(seen) < ttl {
				j.repeat = true
			} else {
				lastSeen[pair] = at
			}
			select {
			case jobs <- j:
			default:
				dropped.Add(1)
			}
		}
		if now.Sub(t0) >= time.Duration(second+1)*time.Second {
			h := hitsAt()
			seconds[second].hits = h - prevHits
			prevHits = h
			second++
		}
	}
	tick.Stop()
	close(jobs)
	workers.Wait()
	loadsFirst := loads.snapshotAt(t0.Add(time.Second))

	first := seconds[0]
	var total, errs int64
	for _, s := range seconds {
		total += s.requests.Load()
		errs += s.errors.Load()
	}
	warm := -1
	for i, s := range seconds {
		if r := s.repeats.Load(); r > 0 && s.hits >= 0.95*float64(r) {
			warm = i + 1
			break
		}
	}
	slices.Sort(live)
	lat := func(s *coldSecond) string {
		slices.Sort(s.latencies)
		return dur(percentile(s.latencies, 99).Seconds())
	}
	hitAt := func(sec int) string {
		s := seconds[min(sec, secs)-1]
		return fmt.Sprintf("%.0f%% at %ds (%.0f%% repeats)", 100*s.hits/float64(s.requests.Load()), min(sec, secs), 100*float64(s.repeats.Load())/float64(s.requests.Load()))
	}
	warmText := "not within the run"
	if warm > 0 {
		warmText = fmt.Sprintf("in second %d", warm)
	}
	return []row{{
		measure: fmt.Sprintf("cold start: %d verifiers, %dk verifications/s of %dk keys", coldVerifiers, coldRate/1000, coldKeys/1000),
		keygate: fmt.Sprintf("first second: %d errors of %d (%.2f%%), p99 %s, %.1f HGETALLs per round trip; whole run (%ds): %d errors of %d, p99 of the last second %s; "+
			"caches live after %s (median) to %s (last); caches answered ≥ 95%% of the repeats %s; hit ratio %s, %s, %s",
			first.errors.Load(), first.requests.Load(), 100*float64(first.errors.Load())/float64(max(first.requests.Load(), 1)), lat(first), loadsFirst,
			secs, errs, total, lat(seconds[secs-1]),
			dur(live[len(live)/2].Seconds()), dur(live[len(live)-1].Seconds()), warmText, hitAt(1), hitAt(5), hitAt(secs)),
		baseline: "—",
		goal:     "0 errors in the first second",
		verdict:  verdict(first.errors.Load() == 0 && dropped.Load() == 0),
		note: fmt.Sprintf("%d instances (each a go-redis client, a store and a verifier with the default options: 30 s cache TTL, 2 s stale window), "+
			"built at the same moment on the Redis holding the data set, while a generator in the same process schedules %d verifications per second, "+
			"open loop (latency counts from the scheduled time), each of one of %d keys and to one of the instances, both uniformly at random, "+
			"for %ds (%d not sent: the generator fell behind). Until a verifier's subscription is live it reads every key from Redis; its cache "+
			"misses go as pipelines while others are on the wire. A repeat is a verification of a key the same instance verified "+
			"before, within the TTL: the most a cache can answer, which uniform traffic over %d keys makes grow slowly (each instance sees each key "+
			"every %ds on average).",
			coldVerifiers, coldRate, coldKeys, secs, dropped.Load(), coldKeys, coldKeys*coldVerifiers/coldRate),
	}}, nil
}

// loadCounter is a go-redis hook that counts, over time, the HGETALLs of
// verifications and the round trips that carried them.
type loadCounter struct {
	mu     sync.Mutex
	events []loadEvent
}

type loadEvent struct {
	at       time.Time
	hgetalls int
}

func (c *loadCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *loadCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "hgetall" {
			c.add(1)
		}
		return next(ctx, cmd)
	}
}

func (c *loadCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, cmd := range cmds {
			if cmd.Name() == "hgetall" {
				n++
			}
		}
		if n > 0 {
			c.add(n)
		}
		return next(ctx, cmds)
	}
}

func (c *loadCounter) add(n int) {
	c.mu.Lock()
	c.events = append(c.events, loadEvent{time.Now(), n})
	c.mu.Unlock()
}

// snapshotAt returns the HGETALLs per round trip before t.
func (c *loadCounter) snapshotAt(t time.Time) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	trips, loads := 0, 0
	for _, e := range c.events {
		if e.at.Before(t) {
			trips++
			loads += e.hgetalls
		}
	}
	return float64(loads) / float64(max(trips, 1))
}

// histogramCount is the sample count of the histogram name whose label
// has value, in reg.
func histogramCount(reg prometheus.Gatherer, name, label, value string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}
