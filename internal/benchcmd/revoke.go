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
	admin := e.client(0)
	defer admin.Close()
	store, err := keystore.New(admin, keystore.Options{})
	if err != nil {
		return nil, err
	}
	defer store.Close()

	rounds := 40 * e.cfg.runs
	lat := make([]time.Duration, 0, rounds)
	var letThrough, checked int64
	for i := 0; i < rounds; i++ {
		k, err := store.Create(ctx, keyParams(i, subjectOf(i)))
		if err != nil {
			return nil, err
		}
		for _, in := range ins {
			if _, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
				return nil, fmt.Errorf("verifying a new key: %w", err)
			}
		}
		// Each verifier serves the key, a few thousand times a second,
		// while it is revoked and for 2ms after.
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
					time.Sleep(50 * time.Microsecond)
				}
			}()
		}
		time.Sleep(time.Millisecond)
		t0 := time.Now()
		if _, err := store.Revoke(ctx, k.ID, nil); err != nil {
			close(stop)
			wg.Wait()
			return nil, err
		}
		t1 := time.Now()
		returned.Store(&t1)
		lat = append(lat, t1.Sub(t0))
		time.Sleep(2 * time.Millisecond)
		close(stop)
		wg.Wait()
		letThrough += late.Load()
		checked += n.Load()
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
