package main

import (
	"context"
	"fmt"
	"slices"
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
	store, closeStore, err := e.adminStore()
	if err != nil {
		return nil, err
	}
	defer closeStore()
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
	store, closeStore, err := e.adminStore()
	if err != nil {
		return nil, err
	}
	defer closeStore()

	rounds := 2 * e.cfg.runs
	lat := make([]time.Duration, 0, rounds)
	var letThrough, checked int64
	for i := range rounds {
		// A fresh frozen verifier each round.
		proxy, err := redistest.NewProxy(nil, e.redisAddr)
		if err != nil {
			return nil, err
		}
		frozen, err := instanceOn(ctx, redis.NewClient(&redis.Options{Addr: proxy.Addr, ReadTimeout: 300 * time.Millisecond, MaxRetries: -1}),
			keystore.Options{LastUsedFlush: -1}, keystore.VerifierOptions{})
		if err != nil {
			proxy.Close()
			return nil, err
		}
		// Its link freezes just before the call; the others and it verify
		// the key every ~100µs while it is revoked and for 200ms after.
		k, err := store.Create(ctx, keyParams(i, subjectOf(i)))
		var r roundResult
		if err == nil {
			r, err = revokeRound(ctx, store, append(slices.Clone(healthy), frozen), k, 100*time.Microsecond, 200*time.Millisecond,
				func() { proxy.FreezeAll() })
		}
		frozen.close()
		proxy.Close()
		if err != nil {
			return nil, err
		}
		lat = append(lat, r.latency)
		letThrough += r.letThrough
		checked += r.checked
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
