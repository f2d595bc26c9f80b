package clustertest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"

	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// failoverTarget is a master to kill under load, and how its deployment
// recovers.
type failoverTarget struct {
	name string
	ns   string
	// shards tells that other masters hold keys too (Cluster).
	shards bool
	// a and b are the clients of the two keygate instances under load, r
	// the admin's, s a fresh one for the checks at the end.
	a, b, r, s redis.UniversalClient
	// onVictim reports whether key lives on the master that kill kills.
	onVictim func(ctx context.Context, key string) bool
	// kill SIGKILLs the master.
	kill func(t testing.TB) string
	// promoted waits, a bounded time, for a replica to take over, and
	// returns its address.
	promoted func(t testing.TB) string
	// restart starts the killed master again, empty, and waits until it
	// has rejoined as a replica.
	restart func(t testing.TB)
}

// Key classes of the failover test.
const (
	hot   = iota // valid, on the victim
	cold         // valid, on another master (Cluster only)
	early        // revoked before the load started
	late         // revoked just before the kill
)

var classNames = [...]string{"valid on the killed master", "valid elsewhere", "revoked before the load", "revoked just before the kill"}

type loadKey struct {
	key   *keystore.APIKey
	class int
	// revokedAt is when the revocation returned, in ns since the test's
	// start; 0 until then.
	revokedAt atomic.Int64
	// waited tells which admin store revoked it: with ReplicaWait or not.
	waited bool
}

// sample is one verification under load.
type sample struct {
	start, end int64 // ns since the test's start
	key        int
	direct     bool // through Store.Verify (every call reads Redis), not the cache
	outcome    string
}

// testFailover verifies keys from two instances, half through their caches
// and half straight from Redis, kills the master that holds the hot keys and
// the invalidation registry, and checks every answer: never valid for a key
// revoked before the kill, never anything but valid or unavailable for a
// valid key. It reports requests failed, seconds to recover and
// revocations lost.
func testFailover(t *testing.T, ft failoverTarget) {
	ctx := context.Background()
	t0 := time.Now()
	since := func() int64 { return int64(time.Since(t0)) }

	a := newInstance(t, ft.a, ft.ns)
	b := newInstance(t, ft.b, ft.ns)
	admin, adminLogs := newStore(t, ft.r, ft.ns)
	waiting, waitingLogs := newStore(t, ft.r, ft.ns, func(o *keystore.Options) { o.ReplicaWait = 500 * time.Millisecond })

	want := [...]int{hot: 4, cold: 4, early: 4, late: 40}
	if !ft.shards {
		want[cold] = 0
	}
	var keys []*loadKey
	have := [4]int{}
	for tries := 0; have != want; tries++ {
		if tries == 1000 {
			t.Fatalf("after 1000 keys, still short of keys by class: %v of %v", have, want)
		}
		k, err := admin.Create(ctx, keystore.CreateParams{Name: "load", Subject: fmt.Sprintf("user_%d", tries%20)})
		if err != nil {
			t.Fatal(err)
		}
		class := cold
		if ft.onVictim(ctx, recordKey(ft.ns, k.ID)) {
			class = hot
			switch {
			case have[hot] < want[hot]:
			case have[early] < want[early]:
				class = early
			default:
				class = late
			}
		}
		if have[class] == want[class] {
			continue
		}
		have[class]++
		keys = append(keys, &loadKey{key: k, class: class, waited: class == late && have[late]%2 == 0})
	}
	for _, k := range keys {
		if k.class == early {
			if _, err := admin.Revoke(ctx, k.key.ID, nil); err != nil {
				t.Fatal(err)
			}
			k.revokedAt.Store(since())
		}
	}

	// The load: each worker cycles through every key, the hot ones ten
	// times as often.
	var rotation []int
	for i, k := range keys {
		n := 1
		if k.class == hot {
			n = 10
		}
		for range n {
			rotation = append(rotation, i)
		}
	}
	var (
		stop        = make(chan struct{})
		wg          sync.WaitGroup
		lastFailure atomic.Int64 // end of the last unavailable answer
		lastHotOK   atomic.Int64 // end of the last valid direct answer for a hot key
		samples     = make([][]sample, 4)
	)
	verifiers := []func(context.Context, string) error{
		func(ctx context.Context, s string) error {
			_, err := a.verifier.Verify(ctx, s, keystore.SourceSidecar)
			return err
		},
		func(ctx context.Context, s string) error {
			_, err := b.verifier.Verify(ctx, s, keystore.SourceSidecar)
			return err
		},
		func(ctx context.Context, s string) error { _, err := a.store.Verify(ctx, s); return err },
		func(ctx context.Context, s string) error { _, err := b.store.Verify(ctx, s); return err },
	}
	for w, verify := range verifiers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			direct := w >= 2
			deadline := time.Now().Add(3 * time.Minute)
			for i := w * 7; time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				ki := rotation[i%len(rotation)]
				start := since()
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := verify(cctx, keys[ki].key.Secret)
				cancel()
				end := since()
				outcome := keystore.Outcome(err)
				samples[w] = append(samples[w], sample{start, end, ki, direct, outcome})
				switch {
				case errors.Is(err, keystore.ErrUnavailable):
					lastFailure.Store(end)
				case err == nil && direct && keys[ki].class == hot:
					lastHotOK.Store(end)
				}
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	time.Sleep(time.Second) // caches warm, last-used flushes run

	// Revoke the late keys, all at once, half with ReplicaWait; then kill.
	var revokers sync.WaitGroup
	revokeErrs := make(chan error, len(keys))
	for _, k := range keys {
		if k.class != late {
			continue
		}
		revokers.Add(1)
		go func() {
			defer revokers.Done()
			s := admin
			if k.waited {
				s = waiting
			}
			if _, err := s.Revoke(ctx, k.key.ID, nil); err != nil {
				revokeErrs <- err
				return
			}
			k.revokedAt.Store(since())
		}()
	}
	revokers.Wait()
	close(revokeErrs)
	for err := range revokeErrs {
		t.Fatalf("revoking before the kill: %v", err)
	}
	killAt := since()
	victim := ft.kill(t)
	promoted := ft.promoted(t)
	promotedAt := since()

	// Recovered: a valid direct answer for a hot key after the last
	// failure, and no failure for 1.5s. The bound is generous (recovery
	// takes a second or two after the promotion) but shorter than the
	// minute after which go-redis reloads a cluster's slot map by itself.
	recoveryDeadline := time.Now().Add(20 * time.Second)
	for {
		now := since()
		if lastHotOK.Load() > lastFailure.Load() && now-lastFailure.Load() > int64(1500*time.Millisecond) && lastHotOK.Load() > killAt {
			break
		}
		if time.Now().After(recoveryDeadline) {
			stopLoad()
			t.Fatalf("no recovery within 20s of the promotion: last failure at +%.1fs, last valid direct answer at +%.1fs, kill at +%.1fs",
				secs(lastFailure.Load()), secs(lastHotOK.Load()), secs(killAt))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The killed master comes back, empty, under load.
	restartAt := since()
	ft.restart(t)
	time.Sleep(time.Second)
	stopLoad()

	// Every answer, judged.
	wrong := map[string]int{}
	var requests, failed [2]int // by direct
	failedElsewhere := 0        // for keys on another master
	failedRejoining := 0        // after the restart of the old master
	wrongAnswers := 0
	var firstFailure, lastFailureStart int64 = -1, -1
	var lostLive int
	var all []sample
	for _, ss := range samples {
		all = append(all, ss...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].start < all[j].start })
	for _, s := range all {
		k := keys[s.key]
		d := 0
		if s.direct {
			d = 1
		}
		if s.start >= killAt && s.start < restartAt {
			requests[d]++
			if s.outcome == "unavailable" {
				failed[d]++
				if k.class == cold {
					failedElsewhere++
				}
			}
		}
		if s.outcome == "unavailable" && s.start >= restartAt {
			failedRejoining++
		}
		if s.outcome == "unavailable" && s.start < restartAt {
			if firstFailure < 0 {
				firstFailure = s.start
			}
			lastFailureStart = s.start
		}
		revoked := k.revokedAt.Load()
		switch {
		case s.outcome == "unavailable":
		case k.class == hot || k.class == cold:
			if s.outcome != "valid" {
				wrong[fmt.Sprintf("%s answered %s", classNames[k.class], s.outcome)]++
				wrongAnswers++
			}
		case revoked != 0 && s.start > revoked:
			if s.outcome == "valid" {
				lostLive++
			}
			if s.outcome != "revoked" {
				wrong[fmt.Sprintf("%s answered %s", classNames[k.class], s.outcome)]++
				wrongAnswers++
			}
		}
	}
	recoveredAt := int64(-1)
	for _, s := range all {
		if s.direct && s.outcome == "valid" && keys[s.key].class == hot && s.start > lastFailureStart && s.start > killAt {
			recoveredAt = s.end
			break
		}
	}
	if len(wrong) > 0 {
		t.Errorf("wrong answers under the failover: %v", wrong)
	}
	if requests[0]+requests[1] == 0 || failed[1] == 0 {
		t.Errorf("no direct verification failed while the master was dead (%v of %v): the kill did not hit the keys under load", failed, requests)
	}
	if recoveredAt < 0 {
		t.Errorf("no valid direct answer after the last failure")
	}

	// After the promotion, with a fresh client: is every revocation there?
	check, _ := newStore(t, ft.s, ft.ns)
	lost := map[bool]int{}
	for _, k := range keys {
		_, err := check.Verify(ctx, k.key.Secret)
		switch {
		case k.class == early || k.class == late:
			if err == nil {
				lost[k.waited]++
			} else if !errors.Is(err, keystore.ErrRevoked) {
				t.Errorf("revoked key %s after the failover: %v", k.key.ID, err)
			}
		case err != nil:
			t.Errorf("valid key %s after the failover: %v", k.key.ID, err)
		}
	}
	if lost[false]+lost[true] > 0 || lostLive > 0 {
		t.Errorf("revocations lost in the failover: %d without ReplicaWait, %d with; %d valid answers for revoked keys under load",
			lost[false], lost[true], lostLive)
	}

	// Last-used times still reach Redis.
	for _, in := range []*instance{a, b} {
		if err := in.store.FlushLastUsed(ctx); err != nil {
			t.Errorf("flushing last-used times after the failover: %v", err)
		}
	}
	for _, k := range keys {
		if k.class != hot {
			continue
		}
		got, err := check.Get(ctx, k.key.ID)
		if err != nil || got.LastUsedAt == nil || *got.LastUsedAt < t0.Add(time.Duration(killAt)).UnixMilli() {
			t.Errorf("hot key %s after the failover: %v, last_used_at %v", k.key.ID, err, lastUsed(got))
		}
	}

	// Instant revocation holds again, across the promoted master.
	waitReady(t, a.verifier, b.verifier)
	checkInstant(t, admin, 10, a, b)

	t.Logf("FIGURES %s: killed master %s at +%.1fs; replica %s promoted %.1fs after the kill (as the harness saw it)",
		ft.name, victim, secs(killAt), promoted, secs(promotedAt-killAt))
	t.Logf("FIGURES %s: requests after the kill: through the cache %d, %d failed (unavailable); straight from Redis %d, %d failed; %d of the failures for keys on other masters; failures from +%.2fs to +%.2fs after the kill",
		ft.name, requests[0], failed[0], requests[1], failed[1], failedElsewhere, secs(firstFailure-killAt), secs(lastFailureStart-killAt))
	t.Logf("FIGURES %s: recovered (first valid direct answer after the last failure) %.2fs after the kill; wrong answers %d; failures while the old master restarted empty and rejoined %d; revocations acknowledged just before the kill: %d, lost %d without ReplicaWait and %d with ReplicaWait=500ms",
		ft.name, secs(recoveredAt-killAt), wrongAnswers, failedRejoining, want[late], lost[false], lost[true])
	for name, logs := range map[string]*syncbuf.Buffer{"admin": adminLogs, "admin with ReplicaWait": waitingLogs} {
		if strings.Contains(logs.String(), "no replica confirmed") {
			t.Logf("%s: a change no replica confirmed:\n%s", name, logs.String())
		}
	}
}

func secs(ns int64) float64 { return time.Duration(ns).Seconds() }

func lastUsed(k *keystore.APIKey) any {
	if k == nil || k.LastUsedAt == nil {
		return nil
	}
	return *k.LastUsedAt
}

// checkInstant caches a new key in every instance, changes it through
// admin, and checks that the next verification on each refuses it, rounds
// times: revoke, delete and update in turn.
func checkInstant(t *testing.T, admin *keystore.Store, rounds int, ins ...*instance) {
	t.Helper()
	ctx := context.Background()
	for i := range rounds {
		k, err := admin.Create(ctx, keystore.CreateParams{Name: "n", Subject: fmt.Sprintf("user_%d", i), Scopes: []string{"read"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			for range 2 {
				if _, err := in.verifier.Verify(ctx, k.Secret, keystore.SourceSidecar, "read"); err != nil {
					t.Fatalf("round %d: verifying a new key: %v", i, err)
				}
			}
		}
		var want error
		switch i % 3 {
		case 0:
			_, err = admin.Revoke(ctx, k.ID, nil)
			want = keystore.ErrRevoked
		case 1:
			err, want = admin.Delete(ctx, k.ID), keystore.ErrNotFound
		case 2:
			_, err = admin.Update(ctx, k.ID, keystore.UpdateParams{Scopes: &[]string{"write"}})
			want = keystore.ErrInsufficientScope
		}
		if err != nil {
			t.Fatalf("round %d: changing the key: %v", i, err)
		}
		for j, in := range ins {
			if _, err := in.verifier.Verify(ctx, k.Secret, keystore.SourceSidecar, "read"); !errors.Is(err, want) {
				t.Fatalf("round %d: instance %d answered %v right after the change returned, want %v", i, j, err, want)
			}
		}
	}
}
