package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/keystore"
)

// revokeVerifiers is how many verifier instances acknowledge each revoke.
const revokeVerifiers = 4

// revokeLatency times Store.Revoke while four verifiers (each with its own
// client, as four processes would have) serve the key from their caches,
// and counts the verifications that began after Revoke returned and still
// let the key through.
func revokeLatency(ctx context.Context, e *env) ([]row, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	var ins []*instance
	defer func() {
		for _, in := range ins {
			in.close()
		}
	}()
	for i := 0; i < revokeVerifiers; i++ {
		in, err := e.instance(ctx, keystore.Options{}, keystore.VerifierOptions{}, 0)
		if err != nil {
			return nil, err
		}
		ins = append(ins, in)
	}
	store, closeStore, err := e.adminStore()
	if err != nil {
		return nil, err
	}
	defer closeStore()

	rounds := 40 * e.cfg.runs
	lat := make([]time.Duration, 0, rounds)
	var letThrough, checked int64
	for i := 0; i < rounds; i++ {
		k, err := store.Create(ctx, keyParams(i, subjectOf(i)))
		if err != nil {
			return nil, err
		}
		// Each verifier serves the key, a few thousand times a second,
		// while it is revoked and for 2ms after.
		r, err := revokeRound(ctx, store, ins, k, 50*time.Microsecond, 2*time.Millisecond,
			func() { time.Sleep(time.Millisecond) })
		if err != nil {
			return nil, err
		}
		lat = append(lat, r.latency)
		letThrough += r.letThrough
		checked += r.checked
	}
	slices.Sort(lat)
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	return []row{{
		measure:  fmt.Sprintf("revoke, %d verifiers acknowledging", revokeVerifiers),
		keygate:  fmt.Sprintf("p50 %s, p99 %s; %d of %d verifications after return let through", dur(p50.Seconds()), dur(p99.Seconds()), letThrough, checked),
		baseline: "—",
		goal:     "p99 ≤ 5 ms; 0 let through",
		verdict:  verdict(p99 <= 5*time.Millisecond && letThrough == 0),
		note: fmt.Sprintf("%d revokes, each of a fresh key cached by %d verifiers (one go-redis client each, as separate processes "+
			"would have) that verify it every ~50µs from one goroutine each during the call; latency is the whole `Store.Revoke` "+
			"call (script, publish, wait for the %d acknowledgements); \"let through\" counts verifications that began after "+
			"Revoke returned (within 2 ms of it) and succeeded.", rounds, revokeVerifiers, revokeVerifiers),
	}}, nil
}

// roundResult is what one revoke of [revokeRound] measured.
type roundResult struct {
	latency    time.Duration // of the whole Store.Revoke call
	checked    int64         // verifications begun after Revoke returned
	letThrough int64         // of those, how many admitted the key
}

// revokeRound has every instance cache k, then verifies it on each, from
// one goroutine each, every pause; calls before (what the measure does just
// before the call: let the load start, freeze a link), revokes k, keeps
// verifying for after, and stops. Verifications that began after Revoke
// returned must all refuse the key.
func revokeRound(ctx context.Context, store *keystore.Store, ins []*instance, k *keystore.APIKey,
	pause, after time.Duration, before func()) (roundResult, error) {
	for _, in := range ins {
		if _, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
			return roundResult{}, fmt.Errorf("verifying a new key: %w", err)
		}
	}
	var returned atomic.Pointer[time.Time]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var late, n atomic.Int64
	for _, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now()
				_, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware)
				if r := returned.Load(); r != nil && began.After(*r) {
					n.Add(1)
					if err == nil {
						late.Add(1)
					}
				}
				time.Sleep(pause)
			}
		}()
	}
	before()
	t0 := time.Now()
	_, err := store.Revoke(ctx, k.ID, nil)
	t1 := time.Now()
	returned.Store(&t1)
	if err == nil {
		time.Sleep(after)
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return roundResult{}, err
	}
	return roundResult{latency: t1.Sub(t0), checked: n.Load(), letThrough: late.Load()}, nil
}
