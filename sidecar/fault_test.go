package sidecar_test

// Fault tests on a real redis-server: kill it under load, restart it, and
// kill the invalidation subscription while keys are being revoked. They
// log their figures (t.Logf: run with -v); `go test -run '^TestFault'
// ./sidecar/` runs them alone.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/sidecar"
)

const faultAdminToken = "fault-admin-token-0123456789abcdef"

// faultClient is a Redis client as keygate builds one (cmd/keygate's
// failFast): one retry, 1 s dial, read and write timeouts.
func faultClient(t *testing.T, addr string) *redis.Client {
	o := redistest.ClientOptions(addr)
	o.ReadTimeout, o.WriteTimeout = time.Second, time.Second
	rdb := redis.NewClient(o)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// faultInstance is one keygate process: a store and a verifier on a Redis
// client of their own, serving the sidecar proxy, forward-auth, the
// net/http middleware and the admin API, each on a loopback HTTP server.
type faultInstance struct {
	store    *keystore.Store
	verifier *keystore.Verifier
	logs     *syncbuf.Buffer // the instance's log, JSON
	srvLog   *syncbuf.Buffer // the HTTP servers' own errors (panics would land here)
	proxy    *httptest.Server
	fa       *httptest.Server
	mw       *httptest.Server
	admin    *httptest.Server
	upstream *http.Transport // the proxy's, to close its idle connections
}

func newFaultInstance(t *testing.T, addr string, upstream string) *faultInstance {
	t.Helper()
	inst := &faultInstance{logs: &syncbuf.Buffer{}, srvLog: &syncbuf.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(inst.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := keystore.New(faultClient(t, addr), keystore.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := keystore.NewVerifier(store, keystore.VerifierOptions{Logger: logger, SubscriptionStale: faultStale})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	inst.store, inst.verifier = store, v

	up, _ := url.Parse(upstream)
	inst.upstream = sidecar.NewTransport()
	proxy, err := sidecar.NewProxy(v, sidecar.ProxyOptions{Upstream: up, Logger: logger, Transport: inst.upstream})
	if err != nil {
		t.Fatal(err)
	}
	fa, err := sidecar.NewForwardAuth(v, sidecar.ForwardAuthOptions{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := adminapi.New(adminapi.Options{Store: store, Verifier: v, AdminTokens: []string{faultAdminToken}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	protected := middleware.New(v, middleware.Options{})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, _ := middleware.FromContext(r.Context())
		io.WriteString(w, "hello "+key.Subject)
	}))
	serve := func(h http.Handler) *httptest.Server {
		s := httptest.NewUnstartedServer(h)
		s.Config.ErrorLog = log.New(inst.srvLog, "", 0)
		s.Start()
		t.Cleanup(s.Close)
		return s
	}
	inst.proxy, inst.fa, inst.mw, inst.admin = serve(proxy), serve(fa), serve(protected), serve(admin)
	return inst
}

// waitReady waits, a bounded time, until the instance's verifier is
// subscribed and Redis answers, and returns how long that took.
func (inst *faultInstance) waitReady(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	for i := 0; inst.verifier.Ready(context.Background()) != nil; i++ {
		if i == 3000 {
			t.Fatal("the verifier is not ready after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// entry is one of the instance's verification entry points.
type entry struct {
	name string
	url  string
}

func (inst *faultInstance) entries() []entry {
	return []entry{
		{"sidecar", inst.proxy.URL + "/reports"},
		{"forward-auth", inst.fa.URL + "/forward-auth"},
		{"middleware", inst.mw.URL + "/reports"},
	}
}

// faultResponse is what a test looks at in an answer.
type faultResponse struct {
	status     int
	code       string // the error JSON's code, if any
	retryAfter string
	body       string
	err        error // a transport error: no answer at all
}

func faultDo(c *http.Client, method, url, authorization, body string) faultResponse {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return faultResponse{err: err}
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		return faultResponse{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := faultResponse{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b), err: err}
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &e) == nil && len(e.Errors) == 1 {
		r.code = e.Errors[0].Code
	}
	return r
}

// adminCall calls the admin API.
func (inst *faultInstance) adminCall(c *http.Client, method, path, body string) faultResponse {
	return faultDo(c, method, inst.admin.URL+path, "Bearer "+faultAdminToken, body)
}

func faultHTTPClient(conns int) (*http.Client, *http.Transport) {
	tr := &http.Transport{MaxIdleConns: conns * 8, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	// A bound for a request that never ends, which would fail the test:
	// not a measurement.
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}, tr
}

// faultStale is the verifiers' SubscriptionStale in the fault tests: short,
// so that the outage phase starts soon after the kill.
const faultStale = 500 * time.Millisecond

// Phases of the kill test. A request is judged by the phases in which it
// was sent and answered: within one phase strictly, across two by either.
const (
	phaseSteady     = iota // Redis up
	phaseKilling           // Redis killed; the verifier may not have noticed
	phaseOutage            // the verifier has noticed: everything must be 503
	phaseRestarting        // Redis restarted; not yet answering everywhere
	phaseRecovered         // every entry point answered a live key
	phases
)

var phaseNames = [phases]string{"steady", "killing", "outage", "restarting", "recovered"}

// allowed returns the statuses a verification may get in a phase: want
// is the answer with Redis up (200 for a live key, 401 for a revoked one).
func allowed(phase, want int) []int {
	switch phase {
	case phaseSteady, phaseRecovered:
		return []int{want}
	case phaseOutage:
		return []int{503}
	}
	return []int{want, 503}
}

type faultKey struct {
	key     *keystore.APIKey
	revoked bool // revoked, and the revoke acknowledged, before the kill
}

// TestFaultRedisKilledUnderLoad kills a redis-server (AOF on, fsync always)
// while eight clients verify keys through the sidecar, forward-auth and
// the middleware over loopback HTTP, makes admin writes during the outage,
// then restarts it. During the outage every verification must answer 503
// and every admin write 503 without changing anything; afterwards
// everything must answer as before by itself, with every key and every
// acknowledged revocation intact, and the goroutines must come back.
func TestFaultRedisKilledUnderLoad(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	ctl := faultClient(t, srv.Addr)
	ctx := context.Background()
	if aof, err := ctl.ConfigGet(ctx, "appendonly").Result(); err != nil || aof["appendonly"] != "yes" {
		t.Fatalf("precondition: appendonly = %v, %v", aof, err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream "+r.Header.Get(sidecar.HeaderKeySubject))
	}))
	t.Cleanup(upstream.Close)
	inst := newFaultInstance(t, srv.Addr, upstream.URL)
	inst.waitReady(t)
	const workers = 8
	client, transport := faultHTTPClient(workers)

	// 30 keys, a third of them revoked, through the admin API.
	var keys []faultKey
	for i := range 30 {
		r := inst.adminCall(client, "POST", "/api_keys", fmt.Sprintf(`{"name":"key %d","subject":"user_%d","scopes":["reports:read"],"claims":{"n":%d}}`, i, i%3, i))
		var k keystore.APIKey
		if r.status != 200 || json.Unmarshal([]byte(r.body), &k) != nil {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		keys = append(keys, faultKey{key: &k})
	}
	for i := 0; i < len(keys); i += 3 {
		if r := inst.adminCall(client, "POST", "/api_keys/"+keys[i].key.ID+"/revoke", `{"revocation_reason":"fault test"}`); r.status != 200 {
			t.Fatalf("revoke: %d %s", r.status, r.body)
		}
		keys[i].revoked = true
	}
	want := func(k faultKey) int {
		if k.revoked {
			return 401
		}
		return 200
	}
	for _, k := range keys { // warm the cache
		for _, e := range inst.entries() {
			if r := faultDo(client, "GET", e.url, "Bearer "+k.key.Secret, ""); r.status != want(k) {
				t.Fatalf("precondition: %s with %s: %d %s", e.name, k.key.Name, r.status, r.body)
			}
		}
	}
	transport.CloseIdleConnections()
	inst.upstream.CloseIdleConnections()
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	baseGoroutines, baseHeap := runtime.NumGoroutine(), mem.HeapAlloc

	// The load: each worker verifies keys round robin through the three
	// entry points until told to stop, or at most maxPerWorker times.
	var phase atomic.Int32
	var inPhase [phases]atomic.Int64 // requests sent and answered within one phase
	var wrong atomic.Int64
	var wrongMu sync.Mutex
	var wrongSamples []string
	stop := make(chan struct{})
	const maxPerWorker = 20000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			entries := inst.entries()
			for i := 0; i < maxPerWorker; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[(w*7+i)%len(keys)]
				e := entries[i%len(entries)]
				before := int(phase.Load())
				r := faultDo(client, "GET", e.url, "Bearer "+k.key.Secret, "")
				after := int(phase.Load())
				ok := r.err == nil && (slices.Contains(allowed(before, want(k)), r.status) || slices.Contains(allowed(after, want(k)), r.status))
				if ok && r.status == 503 && (r.code != "store_unavailable" || r.retryAfter == "") {
					ok = false
				}
				if before == after {
					inPhase[before].Add(1)
				}
				if !ok {
					wrong.Add(1)
					wrongMu.Lock()
					if len(wrongSamples) < 10 {
						wrongSamples = append(wrongSamples, fmt.Sprintf("%s→%s %s revoked=%v: %d %s %v",
							phaseNames[before], phaseNames[after], e.name, k.revoked, r.status, r.body, r.err))
					}
					wrongMu.Unlock()
				}
				time.Sleep(time.Millisecond) // a steady load, not a CPU hog
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	// waitRequests waits, a bounded time, for n more requests within the
	// current phase.
	waitRequests := func(p int, n int64) {
		t.Helper()
		target := inPhase[p].Load() + n
		for i := 0; inPhase[p].Load() < target; i++ {
			if i == 3000 {
				t.Fatalf("fewer than %d requests in phase %s after 30s", n, phaseNames[p])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitRequests(phaseSteady, 200)
	steadyGoroutines := runtime.NumGoroutine()

	// Kill.
	phase.Store(phaseKilling)
	killed := time.Now()
	srv.Stop()
	for i := 0; inst.verifier.Ready(ctx) == nil; i++ {
		if i == 1000 {
			t.Fatal("the verifier still reports ready 10s after Redis was killed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	detected := time.Since(killed)
	// Ready fails on the first failed PING, but docs/revocation.md lets an
	// instance cut off from Redis serve its cache until its last proof of a
	// live subscription is SubscriptionStale old: only then must every
	// answer be 503.
	time.Sleep(faultStale)
	phase.Store(phaseOutage)
	waitRequests(phaseOutage, 300)

	// Admin writes during the outage: 503, and (checked after the
	// restart) nothing changed.
	live := func(n int) faultKey { // the n-th key that is not revoked
		for _, k := range keys {
			if !k.revoked {
				if n == 0 {
					return k
				}
				n--
			}
		}
		panic("not enough live keys")
	}
	revokeTarget, updateTarget, deleteTarget := live(0), live(1), live(2)
	for _, w := range []struct{ method, path, body string }{
		{"POST", "/api_keys", `{"name":"during outage","subject":"user_0"}`},
		{"POST", "/api_keys/" + revokeTarget.key.ID + "/revoke", `{"revocation_reason":"during outage"}`},
		{"PATCH", "/api_keys/" + updateTarget.key.ID, `{"description":"during outage","scopes":[]}`},
		{"DELETE", "/api_keys/" + deleteTarget.key.ID, ""},
		{"GET", "/api_keys?include_invalid=true", ""},
		{"GET", "/api_keys/" + updateTarget.key.ID, ""},
		{"POST", "/api_keys/verify", `{"secret":"` + updateTarget.key.Secret + `"}`},
	} {
		r := inst.adminCall(client, w.method, w.path, w.body)
		if r.status != 503 || r.code != "store_unavailable" || r.retryAfter == "" {
			t.Errorf("%s %s during the outage: %d %s (Retry-After %q), want 503 store_unavailable with Retry-After",
				w.method, w.path, r.status, r.body, r.retryAfter)
		}
	}
	waitRequests(phaseOutage, 100)
	outageGoroutines := runtime.NumGoroutine()

	// Restart, and wait for every entry point to answer by itself.
	phase.Store(phaseRestarting)
	srv.Restart(t)
	restarted := time.Now()
	probe := live(3)
	for i := 0; ; i++ {
		ok := true
		for _, e := range inst.entries() {
			if r := faultDo(client, "GET", e.url, "Bearer "+probe.key.Secret, ""); r.status != 200 {
				ok = false
			}
		}
		if ok {
			break
		}
		if i == 3000 {
			t.Fatal("the entry points do not answer 200 30s after the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	servingAgain := time.Since(restarted)
	readyAgain := inst.waitReady(t) + servingAgain
	phase.Store(phaseRecovered)
	waitRequests(phaseRecovered, 300)
	close(stop)
	wg.Wait()

	// Every key created before the kill is intact, every revocation
	// acknowledged before it holds, and the writes refused during the
	// outage changed nothing.
	for _, k := range keys {
		r := inst.adminCall(client, "GET", "/api_keys/"+k.key.ID, "")
		var got keystore.APIKey
		if r.status != 200 || json.Unmarshal([]byte(r.body), &got) != nil {
			t.Fatalf("%s after the restart: %d %s", k.key.Name, r.status, r.body)
		}
		if got.Name != k.key.Name || got.Subject != k.key.Subject || !slices.Equal(got.Scopes, k.key.Scopes) ||
			string(got.Claims) != string(k.key.Claims) || got.Revoked != k.revoked || got.Description != nil {
			t.Errorf("%s after the restart reads %+v; want it as created, revoked=%v", k.key.Name, got, k.revoked)
		}
		for _, e := range inst.entries() {
			r := faultDo(client, "GET", e.url, "Bearer "+k.key.Secret, "")
			if r.status != want(k) || (k.revoked && r.code != "api_key_revoked") {
				t.Errorf("%s with %s after the restart: %d %s", e.name, k.key.Name, r.status, r.body)
			}
		}
	}
	r := inst.adminCall(client, "GET", "/api_keys?include_invalid=true&limit=100", "")
	var list keystore.KeyList
	if r.status != 200 || json.Unmarshal([]byte(r.body), &list) != nil || list.TotalCount != len(keys) {
		t.Errorf("list after the restart: %d, total %d, want %d keys (nothing created during the outage)", r.status, list.TotalCount, len(keys))
	}
	if n, err := ctl.Keys(ctx, "keygate:key:*").Result(); err != nil || len(n) != len(keys) {
		t.Errorf("Redis holds %d key records (%v), want %d", len(n), err, len(keys))
	}
	if strings.Contains(inst.srvLog.String(), "panic") {
		t.Errorf("an HTTP server recovered from a panic:\n%s", inst.srvLog)
	}

	// Goroutines and memory come back.
	transport.CloseIdleConnections()
	inst.upstream.CloseIdleConnections()
	finalGoroutines := runtime.NumGoroutine()
	for i := 0; i < 1000 && finalGoroutines > baseGoroutines+5; i++ {
		time.Sleep(10 * time.Millisecond)
		finalGoroutines = runtime.NumGoroutine()
	}
	runtime.GC()
	runtime.ReadMemStats(&mem)
	if outageGoroutines > steadyGoroutines+40 {
		t.Errorf("%d goroutines during the outage, %d under the same load before it: failures leak goroutines", outageGoroutines, steadyGoroutines)
	}
	if finalGoroutines > baseGoroutines+5 {
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Errorf("%d goroutines after the load, %d before:\n%s", finalGoroutines, baseGoroutines, b.String())
	}
	if mem.HeapAlloc > baseHeap+64<<20 {
		t.Errorf("heap %d MiB after the load, %d MiB before", mem.HeapAlloc>>20, baseHeap>>20)
	}
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d wrong answers; first ones:\n%s", n, strings.Join(wrongSamples, "\n"))
	}
	t.Logf("requests within a phase: steady %d, killing %d, outage %d, restarting %d, recovered %d; wrong answers %d",
		inPhase[phaseSteady].Load(), inPhase[phaseKilling].Load(), inPhase[phaseOutage].Load(),
		inPhase[phaseRestarting].Load(), inPhase[phaseRecovered].Load(), wrong.Load())
	t.Logf("outage noticed %v after the kill; after the restart: serving %v, ready (subscribed) %v",
		detected.Round(time.Millisecond), servingAgain.Round(time.Millisecond), readyAgain.Round(time.Millisecond))
	t.Logf("goroutines: %d before, %d steady load, %d outage load, %d after; heap %d → %d KiB",
		baseGoroutines, steadyGoroutines, outageGoroutines, finalGoroutines, baseHeap>>10, mem.HeapAlloc>>10)
}

// TestFaultSubscriptionKilledDuringRevokes revokes 60 cached keys one by
// one while the invalidation subscriptions of two verifier instances are
// killed (CLIENT KILL TYPE pubsub) again and again and both instances are
// under load. Right after each revoke returns, an instance that
// acknowledged the invalidation must refuse the key; one that did not (the
// revoker names it in its log) may serve it only from a cache it can no
// longer trust for long. Afterwards no revoked key verifies on either.
func TestFaultSubscriptionKilledDuringRevokes(t *testing.T) {
	srv := redistest.Start(t)
	ctl := faultClient(t, srv.Addr)
	ctx := context.Background()
	upstream := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(upstream.Close)
	a := newFaultInstance(t, srv.Addr, upstream.URL)
	b := newFaultInstance(t, srv.Addr, upstream.URL)
	a.waitReady(t)
	b.waitReady(t)
	revokerLog := &syncbuf.Buffer{}
	revoker, err := keystore.New(faultClient(t, srv.Addr), keystore.Options{
		Logger: slog.New(slog.NewJSONHandler(revokerLog, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { revoker.Close() })
	client, _ := faultHTTPClient(8)

	const n = 60
	keys := make([]*keystore.APIKey, n)
	for i := range keys {
		if keys[i], err = revoker.Create(ctx, keystore.CreateParams{Name: fmt.Sprint("key ", i), Subject: "user_pubsub"}); err != nil {
			t.Fatal(err)
		}
		for _, inst := range []*faultInstance{a, b} {
			if r := faultDo(client, "GET", inst.fa.URL+"/forward-auth", "Bearer "+keys[i].Secret, ""); r.status != 200 {
				t.Fatalf("precondition: %d %s", r.status, r.body)
			}
		}
	}
	instances := map[string]*faultInstance{a.verifier.InstanceID(): a, b.verifier.InstanceID(): b}

	// Load on both instances, on every key, until the revokes are done.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var loadRequests atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				inst := []*faultInstance{a, b}[i%2]
				faultDo(client, "GET", inst.fa.URL+"/forward-auth", "Bearer "+keys[(w*13+i)%n].Secret, "")
				loadRequests.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	// The killer kills every subscription whenever it is kicked.
	kick := make(chan struct{}, 1)
	var kills, connsKilled atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range kick {
			c, err := ctl.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
			if err == nil {
				kills.Add(1)
				connsKilled.Add(c)
			}
		}
	}()

	var violations, unacked, late200 int
	for i, k := range keys {
		if i%6 == 2 {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		if _, err := revoker.Revoke(ctx, k.ID, nil); err != nil {
			t.Fatalf("revoke %d: %v", i, err)
		}
		missing := missingAcks(t, revokerLog.String(), k.ID)
		if len(missing) > 0 {
			unacked++
		}
		for id, inst := range instances {
			r := faultDo(client, "GET", inst.fa.URL+"/forward-auth", "Bearer "+k.Secret, "")
			switch {
			case r.status == 401:
			case r.status == 200 && slices.Contains(missing, id):
				late200++ // allowed: the instance did not acknowledge, and its cache goes stale
			default:
				violations++
				t.Errorf("key %d right after its revoke returned, on instance %s (unacknowledged: %v): %d %s",
					i, id, missing, r.status, r.body)
			}
		}
	}
	close(kick)
	close(stop)
	wg.Wait()

	a.waitReady(t)
	b.waitReady(t)
	for i, k := range keys {
		for id, inst := range instances {
			r := faultDo(client, "GET", inst.fa.URL+"/forward-auth", "Bearer "+k.Secret, "")
			if r.status != 401 || r.code != "api_key_revoked" {
				t.Errorf("revoked key %d on instance %s afterwards: %d %s", i, id, r.status, r.body)
			}
			if _, err := inst.verifier.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != keystore.ErrRevoked {
				t.Errorf("revoked key %d on instance %s, Verify: %v", i, id, err)
			}
		}
	}
	if kills.Load() == 0 || connsKilled.Load() == 0 {
		t.Fatal("the subscriptions were never killed: the test tested nothing")
	}
	t.Logf("%d revokes, %d kills (%d subscription connections), %d load requests; revokes not acknowledged by every instance: %d; "+
		"200 right after a revoke from an instance that had not acknowledged: %d; violations: %d",
		n, kills.Load(), connsKilled.Load(), loadRequests.Load(), unacked, late200, violations)
}

// missingAcks returns the instances that the revoker logged as not having
// acknowledged the invalidation of id.
func missingAcks(t *testing.T, logs, id string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "did not acknowledge") {
			continue
		}
		var rec struct {
			ID        string   `json:"id"`
			Instances []string `json:"instances"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("revoker log line %q: %v", line, err)
		}
		if rec.ID == id {
			out = append(out, rec.Instances...)
		}
	}
	return out
}
