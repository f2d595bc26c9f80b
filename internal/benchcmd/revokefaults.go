package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// fleetSize is how many registered verifiers acknowledge each revoke of
// the fleet row.
const fleetSize = 500

// revokeFleet times Store.Revoke with fleetSize verifiers registered, each
// on a client of its own (its own subscription and connection, as
// separate processes would have), all acknowledging.
func revokeFleet(ctx context.Context, e *env) ([]row, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	ins := make([]*instance, 0, fleetSize)
	defer func() {
		for _, in := range ins {
			in.close()
		}
	}()
	for range fleetSize {
		in, err := e.instance(ctx, keystore.Options{LastUsedFlush: -1}, keystore.VerifierOptions{}, 1)
		if err != nil {
			return nil, fmt.Errorf("starting verifier %d: %w", len(ins)+1, err)
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
	rounds := 20 * e.cfg.runs
	lat := make([]time.Duration, 0, rounds)
	for i := range rounds + 3 { // the first 3 warm up
		k, err := store.Create(ctx, keyParams(i, subjectOf(i)))
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if _, err := store.Revoke(ctx, k.ID, nil); err != nil {
			return nil, err
		}
		if i >= 3 {
			lat = append(lat, time.Since(t0))
		}
	}
	slices.Sort(lat)
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	return []row{{
		measure:  fmt.Sprintf("revoke, %d verifiers acknowledging", fleetSize),
		keygate:  fmt.Sprintf("p50 %s, p99 %s", dur(p50.Seconds()), dur(p99.Seconds())),
		baseline: "—",
		goal:     "p99 ≤ 20 ms",
		verdict:  verdict(p99 <= 20*time.Millisecond),
		note: fmt.Sprintf("%d revokes with %d verifiers registered, each on a go-redis client of its own (a subscription and "+
			"one pooled connection: %d connections in all); latency is the whole `Store.Revoke` call (announce, script, publish, "+
			"one BLPOP that returns when the last acknowledgement is in).", rounds, fleetSize, 2*fleetSize),
	}}, nil
}

// revokeFrozen times Store.Revoke while one of four verifiers has its link
// to Redis frozen (a proxy that forwards nothing and closes nothing), and
// counts the verifications begun after Revoke returned that let the key
// through, on all four.
func revokeFrozen(ctx context.Context, e *env) ([]row, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	const stale = 2 * time.Second // the default of KEYGATE_SUBSCRIPTION_STALE
	var healthy []*instance
	defer func() {
		for _, in := range healthy {
			in.close()
		}
	}()
	for range 3 {
		in, err := e.instance(ctx, keystore.Options{LastUsedFlush: -1}, keystore.VerifierOptions{}, 0)
		if err != nil {
			return nil, err
		}
		healthy = append(healthy, in)
	}
	admin := e.client(0)
	defer admin.Close()
	store, err := keystore.New(admin, keystore.Options{})
	if err != nil {
		return nil, err
	}
	defer store.Close()

	rounds := 2 * e.cfg.runs
	lat := make([]time.Duration, 0, rounds)
	var letThrough, checked int64
	for i := range rounds {
		// A fresh frozen verifier each round.
		proxy, err := redistest.NewProxy(nil, e.redisAddr)
		if err != nil {
			return nil, err
		}
		frozen := &instance{rdb: redis.NewClient(&redis.Options{Addr: proxy.Addr, ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})}
		if frozen.store, err = keystore.New(frozen.rdb, keystore.Options{LastUsedFlush: -1}); err != nil {
			proxy.Close()
			return nil, err
		}
		if frozen.v, err = keystore.NewVerifier(frozen.store, keystore.VerifierOptions{}); err != nil {
			proxy.Close()
			return nil, err
		}
		all := append(slices.Clone(healthy), frozen)
		done := func() { frozen.close(); proxy.Close() }
		if err := waitReady(ctx, frozen.v); err != nil {
			done()
			return nil, err
		}
		k, err := store.Create(ctx, keyParams(i, subjectOf(i)))
		if err != nil {
			done()
			return nil, err
		}
		for _, in := range all {
			if _, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
				done()
				return nil, fmt.Errorf("verifying a new key: %w", err)
			}
		}
		var returned atomic.Pointer[time.Time]
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var late, n atomic.Int64
		for _, in := range all {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Microsecond):
					}
					began := time.Now()
					_, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware)
					if r := returned.Load(); r != nil && began.After(*r) {
						n.Add(1)
						if err == nil {
							late.Add(1)
						}
					}
				}
			}()
		}
		proxy.FreezeAll()
		t0 := time.Now()
		_, err = store.Revoke(ctx, k.ID, nil)
		t1 := time.Now()
		returned.Store(&t1)
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		done()
		if err != nil {
			return nil, err
		}
		lat = append(lat, t1.Sub(t0))
		letThrough += late.Load()
		checked += n.Load()
	}
	slices.Sort(lat)
	worst := lat[len(lat)-1]
	return []row{{
		measure:  "revoke, 1 of 4 verifiers frozen",
		keygate:  fmt.Sprintf("p50 %s, max %s; %d of %d verifications after return let through", dur(percentile(lat, 50).Seconds()), dur(worst.Seconds()), letThrough, checked),
		baseline: "—",
		goal:     "≤ stale window (2 s) + 100 ms; 0 let through",
		verdict:  verdict(worst <= stale+100*time.Millisecond && letThrough == 0),
		note: fmt.Sprintf("%d revokes of a key cached by 4 verifiers (default options, a client each), one of whose links to Redis "+
			"is frozen by a loopback proxy just before the call; the revoke waits for that verifier's registration to lapse "+
			"(at most KEYGATE_SUBSCRIPTION_STALE, 2 s); \"let through\" counts verifications on all four begun after Revoke "+
			"returned (within 200 ms of it) that succeeded.", rounds),
	}}, nil
}
