package keystore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// The tests of this file hold keygate to docs/revocation.md under one fault
// each, on a real redis-server and with real clocks: once a change has
// returned success, no verifier admits the key. Each runs verifiers with
// clients of their own (separate processes, as far as keygate can tell)
// that verify the key in a loop, and counts the admissions of the
// verifications that began after the change returned.

// faultStale is the verifiers' SubscriptionStale here: the longest a change
// waits for a verifier that does not answer, kept short so that many rounds
// fit in a test. The protocol scales with it; the default is measured by
// make bench.
const faultStale = 500 * time.Millisecond

type fleet struct {
	t       *testing.T
	srv     *redistest.Proc
	admin   *Store
	members []*member
	cur     atomic.Pointer[target]
	stop    chan struct{}
	wg      sync.WaitGroup
}

type member struct {
	v       *Verifier
	proxy   *redistest.Proxy // between the verifier and Redis; nil when direct
	reg     *prometheus.Registry
	retired atomic.Bool // the load stops
}

// target is the key under test and what its verifications told.
type target struct {
	secret   string
	changed  atomic.Bool  // the change returned success
	after    atomic.Int64 // verifications begun after that
	admitted atomic.Int64 // of which admitted
	errs     sync.Map     // unexpected errors after the change
}

func newFleet(t *testing.T, proxied ...bool) *fleet {
	t.Helper()
	f := &fleet{t: t, srv: redistest.Start(t), stop: make(chan struct{})}
	t.Cleanup(func() { close(f.stop); f.wg.Wait() })
	f.admin = f.store(redis.NewClient(redistest.ClientOptions(f.srv.Addr)))
	for _, p := range proxied {
		f.members = append(f.members, f.spawn(p))
	}
	return f
}

// spawn starts a verifier, live, and its load; through a proxy of its own
// when proxied.
func (f *fleet) spawn(proxied bool) *member {
	t := f.t
	t.Helper()
	m := &member{reg: prometheus.NewRegistry()}
	opts := redistest.ClientOptions(f.srv.Addr)
	if proxied {
		m.proxy = newHangProxy(t, f.srv.Addr)
		opts.Addr = m.proxy.Addr
		// A hung link costs a verification this long before it fails
		// closed.
		opts.ReadTimeout, opts.WriteTimeout, opts.MaxRetries = 300*time.Millisecond, 300*time.Millisecond, 0
	}
	v, err := NewVerifier(f.store(redis.NewClient(opts)), VerifierOptions{SubscriptionStale: faultStale, Registerer: m.reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	m.v = v
	waitLive(t, v)
	f.wg.Add(1)
	go f.load(m)
	return m
}

// respawn replaces the i-th member with a fresh one of the same kind.
func (f *fleet) respawn(i int) {
	old := f.members[i]
	old.retired.Store(true)
	if old.proxy != nil {
		old.proxy.Close()
	}
	f.members[i] = f.spawn(old.proxy != nil)
}

func (f *fleet) store(rdb *redis.Client) *Store {
	f.t.Cleanup(func() { rdb.Close() })
	s, err := New(rdb, Options{LastUsedFlush: -1})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { s.Close() })
	return s
}

// load verifies the current key through m until the fleet stops.
func (f *fleet) load(m *member) {
	defer f.wg.Done()
	ctx := context.Background()
	for {
		select {
		case <-f.stop:
			return
		case <-time.After(200 * time.Microsecond):
		}
		if m.retired.Load() {
			return
		}
		tg := f.cur.Load()
		if tg == nil {
			continue
		}
		after := tg.changed.Load()
		_, err := m.v.Verify(ctx, tg.secret, SourceSidecar)
		if !after {
			continue
		}
		tg.after.Add(1)
		switch {
		case err == nil:
			tg.admitted.Add(1)
		case errors.Is(err, ErrRevoked), errors.Is(err, ErrNotFound), errors.Is(err, ErrUnavailable):
		default:
			tg.errs.Store(err.Error(), true)
		}
	}
}

// newTarget creates a key and waits until every member whose link is up
// serves it from its cache.
func (f *fleet) newTarget() (*APIKey, *target) {
	f.t.Helper()
	k := mustCreate(f.t, f.admin, CreateParams{Name: "fault", Subject: "s"})
	tg := &target{secret: k.Secret}
	f.cur.Store(tg)
	for _, m := range f.members {
		waitLive(f.t, m.v)
		waitFor(f.t, "the key cached by "+m.v.InstanceID(), func() bool { return cached(m.v, k.ID) })
	}
	return k, tg
}

// settle lets the load run on after a change, then checks that nothing
// begun after the change was admitted.
func (f *fleet) settle(tg *target, d time.Duration) {
	f.t.Helper()
	time.Sleep(d)
	if n := tg.admitted.Load(); n > 0 {
		f.t.Errorf("%d of %d verifications begun after the change returned admitted the key", n, tg.after.Load())
	}
	if tg.after.Load() == 0 {
		f.t.Error("no verification ran after the change: this round measured nothing")
	}
	tg.errs.Range(func(k, _ any) bool { f.t.Errorf("unexpected outcome: %v", k); return true })
}

func flushes(t testing.TB, m *member, reason string) float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "keygate_cache_flushes_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return s.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestRevokeWithAFrozenVerifier: one of three verifiers has its link to
// Redis frozen (nothing forwarded, nothing closed) just before each revoke.
// The revoke waits for it until its registration lapses, and none of the
// three admits the key after the revoke returns.
func TestRevokeWithAFrozenVerifier(t *testing.T) {
	const rounds = 20
	f := newFleet(t, false, false, true)
	ctx := context.Background()
	var took []time.Duration
	for range rounds {
		f.respawn(2)
		k, tg := f.newTarget()
		if n := f.members[2].proxy.FreezeAll(); n == 0 {
			t.Fatal("no connection to freeze")
		}
		start := time.Now()
		if _, err := f.admin.Revoke(ctx, k.ID, nil); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(start))
		tg.changed.Store(true)
		f.settle(tg, 100*time.Millisecond)
		if t.Failed() {
			return
		}
	}
	// The revoke waits at most the frozen verifier's registration, which
	// is at most SubscriptionStale ahead.
	t.Logf("FIGURES revoke with one of 3 verifiers frozen, stale window %v: p50 %v, max %v, %d rounds, 0 admitted after",
		faultStale, percentile(took, 50), percentile(took, 100), rounds)
}

// TestRevokeWithAStalledReader: a verifier's subscription reader stops
// (as a process under SIGSTOP or a starved goroutine would) while its
// heartbeats go on. Nothing is admitted after the revoke returns, nor after
// the reader resumes with the invalidation still queued.
func TestRevokeWithAStalledReader(t *testing.T) {
	f := newFleet(t, false, false)
	ctx := context.Background()
	stalled := f.members[1]
	gate := make(chan struct{})
	var stall atomic.Bool
	stalled.v.beforeReceive = func(any) bool {
		if stall.Load() {
			<-gate
		}
		return true
	}
	k, tg := f.newTarget()
	stall.Store(true)
	if _, err := f.admin.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatal(err)
	}
	tg.changed.Store(true)
	f.settle(tg, 300*time.Millisecond)
	stall.Store(false)
	close(gate)
	f.settle(tg, 300*time.Millisecond)
	waitLive(t, stalled.v)
	if cachedValid(stalled.v, k.ID) {
		t.Fatal("the resumed verifier still caches the key as valid")
	}
}

// TestRevokeWhosePublishFails cuts the revoker's link to Redis just as it
// publishes: the revoke answers ErrInvalidationUnconfirmed (the API's 503
// invalidation_unconfirmed), the verifiers empty their caches within the
// stale window plus a second all the same, and the repeated revoke
// succeeds, after which nothing admits the key.
func TestRevokeWhosePublishFails(t *testing.T) {
	f := newFleet(t, false, false)
	ctx := context.Background()
	proxy := newHangProxy(t, f.srv.Addr)
	opts := redistest.ClientOptions(proxy.Addr)
	opts.MaxRetries = 0
	cutter := &cutOnScript{sha: publishScript.Hash(), cut: func() { proxy.Cut(true) }}
	rdb := redis.NewClient(opts)
	rdb.AddHook(cutter)
	revoker := f.store(rdb)

	k, tg := f.newTarget()
	_, err := revoker.Revoke(ctx, k.ID, nil)
	if !errors.Is(err, ErrInvalidationUnconfirmed) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Revoke with the publish cut = %v, want ErrInvalidationUnconfirmed", err)
	}
	// Stored all the same.
	if got, err := f.admin.Get(ctx, k.ID); err != nil || !got.Revoked {
		t.Fatalf("after the unconfirmed revoke: %v, %v", got, err)
	}
	for _, m := range f.members {
		waitFor(t, "the verifiers to apply the unpublished revoke", func() bool {
			_, err := m.v.Verify(ctx, k.Secret, SourceSidecar)
			return errors.Is(err, ErrRevoked)
		})
		if n := flushes(t, m, flushUnpublished); n < 1 {
			t.Errorf("%s emptied its cache for an unpublished change %v times", m.v.InstanceID(), n)
		}
	}

	proxy.Cut(false)
	cutter.sha = ""
	if _, err := revoker.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatalf("repeated Revoke = %v, want success", err)
	}
	tg.changed.Store(true)
	f.settle(tg, 200*time.Millisecond)
}

// cutOnScript is a go-redis hook that runs cut before the script whose
// SHA1 is sha goes out.
type cutOnScript struct {
	sha string
	cut func()
}

func (h *cutOnScript) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *cutOnScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.sha != "" && cmd.Name() == "evalsha" && len(cmd.Args()) > 1 && cmd.Args()[1] == h.sha {
			h.cut()
		}
		return next(ctx, cmd)
	}
}
func (h *cutOnScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestInvalidationLostWhileSubscribed: a verifier's subscription stays up
// but one invalidation never reaches it. The revoke waits for it until its
// registration lapses; its next heartbeat finds the gap in the sequence and
// empties its cache; nothing is admitted after the revoke returns.
func TestInvalidationLostWhileSubscribed(t *testing.T) {
	f := newFleet(t, false, false)
	ctx := context.Background()
	lossy := f.members[1]
	var drop atomic.Bool
	lossy.v.beforeReceive = func(msg any) bool {
		_, isMessage := msg.(*redis.Message)
		return !(isMessage && drop.CompareAndSwap(true, false))
	}
	waits := recordWaits(f.admin)
	k, tg := f.newTarget()
	drop.Store(true)
	if _, err := f.admin.Revoke(ctx, k.ID, nil); err != nil {
		t.Fatal(err)
	}
	tg.changed.Store(true)
	if _, missing := waits(); len(missing) != 1 || len(missing[0]) != 1 || missing[0][0] != lossy.v.InstanceID() {
		t.Fatalf("verifiers that did not acknowledge = %v, want the lossy one", missing)
	}
	f.settle(tg, 300*time.Millisecond)
	waitFor(t, "the lossy verifier to notice the gap", func() bool { return flushes(t, lossy, flushGap) >= 1 })
	if cachedValid(lossy.v, k.ID) {
		t.Fatal("the lossy verifier still caches the key as valid")
	}
}

// TestRetriedScriptsStillPublish: go-redis re-sends a script whose reply
// timed out. A delete (or revoke) whose script ran twice still succeeds and
// still publishes its invalidation.
func TestRetriedScriptsStillPublish(t *testing.T) {
	f := newFleet(t, false)
	ctx := context.Background()
	rdb := redis.NewClient(redistest.ClientOptions(f.srv.Addr))
	rdb.AddHook(twice{deleteScript.Hash(), revokeScript.Hash()})
	changer := f.store(rdb)
	m := f.members[0]
	for _, tc := range []struct {
		name   string
		change func(id string) error
	}{
		{"delete", func(id string) error { return changer.Delete(ctx, id) }},
		{"revoke", func(id string) error { _, err := changer.Revoke(ctx, id, nil); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(m.v.metrics.invalidations)
			k, tg := f.newTarget()
			if err := tc.change(k.ID); err != nil {
				t.Fatalf("%s whose script ran twice = %v, want success", tc.name, err)
			}
			tg.changed.Store(true)
			if got := testutil.ToFloat64(m.v.metrics.invalidations); got != before+1 {
				t.Fatalf("invalidations handled = %v, want %v", got, before+1)
			}
			f.settle(tg, 100*time.Millisecond)
		})
	}
}

// twice is a go-redis hook that sends the scripts of the given SHA1s twice
// and keeps the second reply, as a retry after a lost reply does.
type twice []string

func (h twice) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h twice) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" && len(cmd.Args()) > 1 {
			for _, sha := range h {
				if cmd.Args()[1] == sha {
					if err := next(ctx, cmd); err != nil {
						return err
					}
					break
				}
			}
		}
		return next(ctx, cmd)
	}
}
func (h twice) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// cachedValid reports whether v's cache holds id as not revoked.
func cachedValid(v *Verifier, id string) bool {
	kid := parseKeyID(id[len(idPrefix):])
	e := v.cache.get(&kid, v.store.now())
	return e != nil && !e.key.Revoked
}

// newHangProxy starts a [redistest.Proxy] to upstream.
func newHangProxy(t testing.TB, upstream string) *redistest.Proxy {
	t.Helper()
	p, err := redistest.NewProxy(t, upstream)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
