package keystore

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
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

// narrowings are the changes the guarantee covers, each applied to the key
// under test by one store: once one returns, no verifier may admit the key.
var narrowings = []struct {
	name  string
	apply func(ctx context.Context, s *Store, k *APIKey) error
}{
	{"revoke", func(ctx context.Context, s *Store, k *APIKey) error {
		_, err := s.Revoke(ctx, k.ID, nil)
		return err
	}},
	{"disable", func(ctx context.Context, s *Store, k *APIKey) error {
		_, err := s.Update(ctx, k.ID, UpdateParams{Enabled: ptr(false)})
		return err
	}},
	{"narrow CIDRs", func(ctx context.Context, s *Store, k *APIKey) error {
		_, err := s.Update(ctx, k.ID, UpdateParams{AllowedCIDRs: &[]string{"192.0.2.0/24"}})
		return err
	}},
	{"revoke_all", func(ctx context.Context, s *Store, k *APIKey) error {
		_, err := s.RevokeAll(ctx, k.Subject, nil)
		return err
	}},
}

// loadClient is the address the fleet's load verifies from; target keys
// allow it.
var loadClient = netip.MustParseAddr("10.0.0.1")

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
		_, err := m.v.Check(ctx, Request{Secret: tg.secret, Source: SourceSidecar, ClientIP: loadClient})
		if !after {
			continue
		}
		tg.after.Add(1)
		switch {
		case err == nil:
			tg.admitted.Add(1)
		case errors.Is(err, ErrRevoked), errors.Is(err, ErrDisabled), errors.Is(err, ErrIPNotAllowed),
			errors.Is(err, ErrNotFound), errors.Is(err, ErrUnavailable):
		default:
			tg.errs.Store(err.Error(), true)
		}
	}
}

// newTarget creates a key and waits until every member whose link is up
// serves it from its cache.
func (f *fleet) newTarget() (*APIKey, *target) {
	f.t.Helper()
	k := mustCreate(f.t, f.admin, CreateParams{Name: "fault", Subject: "s", AllowedCIDRs: []string{"10.0.0.0/8"}})
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

// TestRevokeWithAFrozenVerifier: one of three verifiers has its link to
// Redis frozen (nothing forwarded, nothing closed) just before each revoke
// (or disable, narrowing, bulk revoke). The change waits for it until its
// registration lapses, and none of the three admits the key after the
// change returns.
func TestRevokeWithAFrozenVerifier(t *testing.T) {
	for _, nw := range narrowings {
		t.Run(nw.name, func(t *testing.T) {
			rounds := 5
			if nw.name == "revoke" {
				rounds = 20
			}
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
				if err := nw.apply(ctx, f.admin, k); err != nil {
					t.Fatal(err)
				}
				took = append(took, time.Since(start))
				tg.changed.Store(true)
				f.settle(tg, 100*time.Millisecond)
				if t.Failed() {
					return
				}
			}
			// The change waits at most the frozen verifier's registration,
			// which is at most SubscriptionStale ahead.
			t.Logf("FIGURES %s with one of 3 verifiers frozen, stale window %v: p50 %v, max %v, %d rounds, 0 admitted after",
				nw.name, faultStale, percentile(took, 50), percentile(took, 100), rounds)
		})
	}
}

// TestRevokeWithAStalledReader: a verifier's subscription reader stops
// (as a process under SIGSTOP or a starved goroutine would) while its
// heartbeats go on. Nothing is admitted after the revoke returns, nor after
// the reader resumes with the invalidation still queued.
func TestRevokeWithAStalledReader(t *testing.T) {
	for _, nw := range narrowings {
		t.Run(nw.name, func(t *testing.T) { testStalledReader(t, nw.apply) })
	}
}

func testStalledReader(t *testing.T, narrow func(context.Context, *Store, *APIKey) error) {
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
	if err := narrow(ctx, f.admin, k); err != nil {
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
	for _, nw := range narrowings {
		t.Run(nw.name, func(t *testing.T) { testPublishFails(t, nw.apply) })
	}
}

func testPublishFails(t *testing.T, narrow func(context.Context, *Store, *APIKey) error) {
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
	err := narrow(ctx, revoker, k)
	if !errors.Is(err, ErrInvalidationUnconfirmed) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("the change with the publish cut = %v, want ErrInvalidationUnconfirmed", err)
	}
	// Stored all the same.
	if got, err := f.admin.load(ctx, k.ID, opGet); err != nil || admissible(got.key, &got.keyState) {
		t.Fatalf("after the unconfirmed change: %+v, %v; want the change stored", got, err)
	}
	for _, m := range f.members {
		waitFor(t, "the verifiers to apply the unpublished change", func() bool {
			_, err := m.v.Check(ctx, Request{Secret: k.Secret, Source: SourceSidecar, ClientIP: loadClient})
			return err != nil && !errors.Is(err, ErrUnavailable)
		})
		if n := testkit.MetricValue(t, m.reg, "keygate_cache_flushes_total", map[string]string{"reason": flushUnpublished}); n < 1 {
			t.Errorf("%s emptied its cache for an unpublished change %v times", m.v.InstanceID(), n)
		}
	}

	proxy.Cut(false)
	cutter.sha = ""
	if err := narrow(ctx, revoker, k); err != nil {
		t.Fatalf("the repeated change = %v, want success", err)
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
	for _, nw := range narrowings {
		t.Run(nw.name, func(t *testing.T) { testLostWhileSubscribed(t, nw.apply) })
	}
}

func testLostWhileSubscribed(t *testing.T, narrow func(context.Context, *Store, *APIKey) error) {
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
	if err := narrow(ctx, f.admin, k); err != nil {
		t.Fatal(err)
	}
	tg.changed.Store(true)
	if _, missing := waits(); len(missing) != 1 || len(missing[0]) != 1 || missing[0][0] != lossy.v.InstanceID() {
		t.Fatalf("verifiers that did not acknowledge = %v, want the lossy one", missing)
	}
	f.settle(tg, 300*time.Millisecond)
	waitFor(t, "the lossy verifier to notice the gap", func() bool {
		return testkit.MetricValue(t, lossy.reg, "keygate_cache_flushes_total", map[string]string{"reason": flushGap}) >= 1
	})
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
	rdb.AddHook(twice{deleteScript.Hash(), revokeScript.Hash(), updateScript.Hash()})
	changer := f.store(rdb)
	m := f.members[0]
	for _, tc := range []struct {
		name   string
		change func(id string) error
	}{
		{"delete", func(id string) error { return changer.Delete(ctx, id) }},
		{"revoke", func(id string) error { _, err := changer.Revoke(ctx, id, nil); return err }},
		{"disable", func(id string) error {
			_, err := changer.Update(ctx, id, UpdateParams{Enabled: ptr(false)})
			return err
		}},
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

// cachedValid reports whether v's cache holds id in a state that admits
// the fleet's load.
func cachedValid(v *Verifier, id string) bool {
	kid := parseKeyID(id[len(idPrefix):])
	e := v.cache.get(&kid, v.store.now())
	return e != nil && admissible(e.key, &e.keyState)
}

// admissible reports whether k, whose state st is, admits the fleet's
// load.
func admissible(k *APIKey, st *keyState) bool {
	out, _ := refused(k, time.Now())
	return out == nil && st.admits(k, loadClient)
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

// TestDisableAndEnableAcrossVerifiers: two verifiers with clients of their
// own verify a key in a loop; once the disable returns, neither admits it;
// once the enable returns, both admit it again at once.
func TestDisableAndEnableAcrossVerifiers(t *testing.T) {
	f := newFleet(t, false, false)
	ctx := context.Background()
	for range 5 {
		k, tg := f.newTarget()
		if _, err := f.admin.Update(ctx, k.ID, UpdateParams{Enabled: ptr(false)}); err != nil {
			t.Fatal(err)
		}
		tg.changed.Store(true)
		f.settle(tg, 100*time.Millisecond)
		if _, err := f.admin.Update(ctx, k.ID, UpdateParams{Enabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		for _, m := range f.members {
			if _, err := m.v.Check(ctx, Request{Secret: k.Secret, Source: SourceSidecar, ClientIP: loadClient}); err != nil {
				t.Fatalf("%s right after the enable: %v", m.v.InstanceID(), err)
			}
		}
		if t.Failed() {
			return
		}
	}
}

// TestRevokeAllOfTenThousandKeys: a subject with 10,000 keys, every one
// cached by two verifiers that verify them in a loop. Once the bulk revoke
// returns, neither admits any of them; each verifier handled one
// invalidation for all of them.
func TestRevokeAllOfTenThousandKeys(t *testing.T) {
	const n = 10_000
	f := newFleet(t, false, false)
	ctx := context.Background()
	const subject = "org_bulk"
	secrets := make([]string, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				k, err := f.admin.Create(ctx, CreateParams{Name: "bulk", Subject: subject})
				if err != nil {
					failed.Store(err)
					return
				}
				secrets[i] = k.Secret
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	before := make([]float64, len(f.members))
	for i, m := range f.members {
		for _, s := range secrets {
			if _, err := m.v.Verify(ctx, s, SourceSidecar); err != nil {
				t.Fatal(err)
			}
		}
		if c := m.v.cache.len(); c < n {
			t.Fatalf("%s caches %d keys, want %d", m.v.InstanceID(), c, n)
		}
		before[i] = testutil.ToFloat64(m.v.metrics.invalidations)
	}

	var changed atomic.Bool
	var after, admitted atomic.Int64
	stop := make(chan struct{})
	var load sync.WaitGroup
	for _, m := range f.members {
		for g := range 2 {
			load.Add(1)
			go func() {
				defer load.Done()
				for i := g; ; i += 7 {
					select {
					case <-stop:
						return
					case <-time.After(200 * time.Microsecond):
					}
					begun := changed.Load()
					_, err := m.v.Verify(ctx, secrets[i%n], SourceSidecar)
					if begun {
						after.Add(1)
						if err == nil {
							admitted.Add(1)
						}
					}
				}
			}()
		}
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	revoked, err := f.admin.RevokeAll(ctx, subject, ptr("offboarded"))
	took := time.Since(start)
	changed.Store(true)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	load.Wait()
	if err != nil || revoked != n {
		t.Fatalf("RevokeAll = %d, %v; want %d", revoked, err, n)
	}
	if a := admitted.Load(); a != 0 || after.Load() == 0 {
		t.Fatalf("%d of %d verifications begun after the bulk revoke returned admitted a key", a, after.Load())
	}
	for i, m := range f.members {
		if d := testutil.ToFloat64(m.v.metrics.invalidations) - before[i]; d != 1 {
			t.Errorf("%s handled %v invalidations for the bulk revoke, want 1", m.v.InstanceID(), d)
		}
		for _, s := range secrets {
			if _, err := m.v.Verify(ctx, s, SourceSidecar); !errors.Is(err, ErrRevoked) {
				t.Fatalf("%s after the bulk revoke: %v, want ErrRevoked", m.v.InstanceID(), err)
			}
		}
	}
	if again, err := f.admin.RevokeAll(ctx, subject, nil); err != nil || again != 0 {
		t.Errorf("repeated RevokeAll = %d, %v; want 0", again, err)
	}
	t.Logf("FIGURES bulk revoke of %d keys of one subject, 2 verifiers caching them all and verifying in a loop: %v, 1 invalidation per verifier; %d verifications after it, 0 admitted",
		n, took.Round(time.Millisecond), after.Load())
}
