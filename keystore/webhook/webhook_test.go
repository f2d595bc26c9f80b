package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// quiet drops the dispatchers' logs of the failures the tests provoke.
var quiet = slog.New(slog.DiscardHandler)

// TestSignatureTestVector signs the Standard Webhooks specification's
// published example.
func TestSignatureTestVector(t *testing.T) {
	s, err := webhook.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	got := s.Signature("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	for _, bad := range []string{"whsec_not*base64", "whsec_c2hvcnQ=", ""} {
		if _, err := webhook.NewSigner(bad); err == nil {
			t.Errorf("NewSigner(%q) accepted it", bad)
		}
	}
}

// message is one webhook as the receiver got it.
type message struct {
	ID        string
	Timestamp string
	Type      string `json:"type"`
	Data      json.RawMessage
	Body      string
}

// receiver checks every request's signature with the Standard Webhooks
// reference library, and counts the messages by webhook-id.
type receiver struct {
	t         *testing.T
	wh        *standardwebhooks.Webhook
	ignoreAge bool // the sender's clock is a test clock
	mu        sync.Mutex
	msgs      map[string]message
	seen      map[string]int
	order     []string
	status    int // answered while set (a receiver that fails)
}

func newReceiver(t *testing.T) *receiver {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return &receiver{t: t, wh: wh, msgs: map[string]message{}, seen: map[string]int{}}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	verify := r.wh.Verify
	if r.ignoreAge {
		verify = r.wh.VerifyIgnoringTimestamp
	}
	if err := verify(body, req.Header); err != nil {
		r.t.Errorf("a webhook whose signature does not verify: %v\n%s", err, body)
		w.WriteHeader(400)
		return
	}
	r.mu.Lock()
	status := r.status
	r.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	var m message
	if err := json.Unmarshal(body, &m); err != nil {
		r.t.Errorf("webhook body: %v: %s", err, body)
	}
	m.ID, m.Timestamp, m.Body = req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), string(body)
	r.mu.Lock()
	r.msgs[m.ID] = m
	r.seen[m.ID]++
	if r.seen[m.ID] == 1 {
		r.order = append(r.order, m.ID)
	}
	r.mu.Unlock()
}

func (r *receiver) setStatus(code int) {
	r.mu.Lock()
	r.status = code
	r.mu.Unlock()
}

// got returns the distinct messages received and how many were received
// more than once.
func (r *receiver) got() (map[string]message, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]message, len(r.msgs))
	dup := 0
	for id, m := range r.msgs {
		out[id] = m
		dup += r.seen[id] - 1
	}
	return out, dup
}

// fixture is a Redis with a store, an audit log, and dispatchers on them.
type fixture struct {
	rdb   *redis.Client
	store *keystore.Store
	log   *audit.Log
	clock func() time.Time
}

func newFixture(t *testing.T, now func() time.Time) *fixture {
	t.Helper()
	rdb := redistest.Server(t)
	store, err := keystore.New(rdb, keystore.Options{Now: now, LastUsedFlush: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return &fixture{rdb: rdb, store: store, log: audit.New(rdb, audit.Options{Now: now}), clock: now}
}

// dispatcher returns a dispatcher for url with fast retries, and its
// metrics.
func (f *fixture) dispatcher(t *testing.T, url string) (*webhook.Dispatcher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	d, err := webhook.New(f.rdb, webhook.Options{
		URLs: []string{url}, Secret: secret, Audit: f.log, Store: f.store,
		Timeout: time.Second, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		PollInterval: 25 * time.Millisecond, Now: f.clock, Registerer: reg, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d, reg
}

// waitStarted waits until a dispatcher has set the cursor: events
// recorded from then on are sent.
func (f *fixture) waitStarted(t *testing.T) {
	t.Helper()
	testkit.WaitFor(t, "the cursor set", 5*time.Second, func() bool {
		return f.rdb.Exists(context.Background(), "keygate:{wh}:cursor").Val() == 1
	})
}

// run runs d until the test ends.
func run(t *testing.T, d *webhook.Dispatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (f *fixture) record(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		e := &audit.Event{Actor: audit.Actor{Type: audit.ActorAdminToken, Name: "ci"}, Action: audit.Updated,
			APIKeyID: fmt.Sprintf("ak_%032d", i), Subject: "user_42", RequestID: fmt.Sprintf("req-%d", i)}
		if err := f.log.Record(context.Background(), e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// deliveries is keygate_webhook_deliveries_total{result} of reg.
func deliveries(t *testing.T, reg prometheus.Gatherer, result string) float64 {
	t.Helper()
	return testkit.MetricValue(t, reg, "keygate_webhook_deliveries_total", map[string]string{"result": result})
}

// TestReceiverDownThenUp keeps the receiver's port closed for a while,
// then answering 503, then 200: every event arrives, signed, with the
// audit event as its data.
func TestReceiverDownThenUp(t *testing.T) {
	f := newFixture(t, time.Now)
	addr := testkit.FreeAddr(t) // down: connections are refused
	rcv := newReceiver(t)
	before := f.record(t, 5) // before webhooks are configured: not sent
	d, reg := f.dispatcher(t, "http://"+addr+"/hooks")
	run(t, d)
	f.waitStarted(t)
	ids := f.record(t, 20)
	time.Sleep(time.Second)
	srv := httptest.NewUnstartedServer(rcv)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	rcv.setStatus(503)
	srv.Start()
	defer srv.Close()
	time.Sleep(500 * time.Millisecond)
	rcv.setStatus(0)
	testkit.WaitFor(t, "every event delivered", 20*time.Second, func() bool { m, _ := rcv.got(); return len(m) == len(ids) })
	msgs, dup := rcv.got()
	for _, id := range before {
		if _, ok := msgs[id]; ok {
			t.Errorf("event %s, recorded before webhooks were configured, was sent", id)
		}
	}
	for _, id := range ids {
		m, ok := msgs[id]
		var ev audit.Event
		if !ok || m.Type != "api_key.updated" || json.Unmarshal(m.Data, &ev) != nil || ev.ID != id || ev.Actor.Name != "ci" {
			t.Fatalf("message %s: %+v", id, m)
		}
	}
	failed := deliveries(t, reg, "failed")
	t.Logf("FIGURES receiver down ~1.5s: %d events delivered, %.0f failed attempts, %d duplicates", len(msgs), failed, dup)
	if failed < 1 {
		t.Fatal("no attempt failed while the receiver was down")
	}
	testkit.WaitFor(t, "oldest pending back to 0", 5*time.Second, func() bool {
		return testkit.MetricValue(t, reg, "keygate_webhook_oldest_pending_seconds", nil) == 0
	})
}

// TestTwoWorkers runs two dispatchers, as two serve instances would, on
// one Redis: every event is delivered, the work is shared, and duplicates
// are counted.
func TestTwoWorkers(t *testing.T) {
	f := newFixture(t, time.Now)
	rcv := newReceiver(t)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	a, regA := f.dispatcher(t, srv.URL)
	b, regB := f.dispatcher(t, srv.URL)
	run(t, a)
	run(t, b)
	f.waitStarted(t)
	var ids []string
	for range 10 {
		ids = append(ids, f.record(t, 20)...)
		time.Sleep(10 * time.Millisecond)
	}
	testkit.WaitFor(t, "every event delivered", 30*time.Second, func() bool { m, _ := rcv.got(); return len(m) == len(ids) })
	msgs, dup := rcv.got()
	for _, id := range ids {
		if _, ok := msgs[id]; !ok {
			t.Fatalf("event %s not delivered", id)
		}
	}
	// A worker counts a delivery once it has recorded it, just after the
	// receiver has it.
	var byA, byB float64
	testkit.WaitFor(t, "every delivery counted", 5*time.Second, func() bool {
		byA = deliveries(t, regA, "delivered")
		byB = deliveries(t, regB, "delivered")
		return byA+byB >= float64(len(ids))
	})
	t.Logf("FIGURES two workers: %d events, delivered by A %.0f, by B %.0f, %d duplicates", len(ids), byA, byB, dup)
	if byA+byB < float64(len(ids)) {
		t.Fatalf("the workers count %.0f deliveries for %d events", byA+byB, len(ids))
	}
}

// TestKilledWorker leaves a delivery leased by a worker that stopped in
// the middle of it (its context cancelled while the receiver holds the
// request): another worker delivers it once the lease ends.
func TestKilledWorker(t *testing.T) {
	f := newFixture(t, time.Now)
	rcv := newReceiver(t)
	first, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		held := false
		once.Do(func() { held = true; close(first) })
		if held {
			select { // never answers: its worker dies meanwhile
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		rcv.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer close(release)
	a, _ := f.dispatcher(t, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	f.waitStarted(t)
	ids := f.record(t, 1)
	<-first
	cancel() // the worker dies mid-delivery
	<-done
	killed := time.Now()
	b, _ := f.dispatcher(t, srv.URL)
	run(t, b)
	testkit.WaitFor(t, "the delivery taken up again", 10*time.Second, func() bool { m, _ := rcv.got(); return len(m) == 1 })
	if m, _ := rcv.got(); m[ids[0]].ID != ids[0] {
		t.Fatalf("got %v", m)
	}
	t.Logf("FIGURES killed worker: delivered %s after the kill (lease 2s)", time.Since(killed).Round(10*time.Millisecond))
}

// TestGivenUp retries a receiver that always fails for MaxAge, then drops
// the message and counts it expired.
func TestGivenUp(t *testing.T) {
	f := newFixture(t, time.Now)
	rcv := newReceiver(t)
	rcv.setStatus(500)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	reg := prometheus.NewRegistry()
	d, err := webhook.New(f.rdb, webhook.Options{URLs: []string{srv.URL}, Secret: secret, Audit: f.log, Store: f.store,
		Backoff: 50 * time.Millisecond, MaxAge: 500 * time.Millisecond, PollInterval: 25 * time.Millisecond, Registerer: reg, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, d)
	f.waitStarted(t)
	f.record(t, 1)
	testkit.WaitFor(t, "the message given up", 10*time.Second, func() bool {
		return deliveries(t, reg, "expired") == 1
	})
	if n := f.rdb.ZCard(context.Background(), "keygate:{wh}:due").Val(); n != 0 {
		t.Fatalf("%d deliveries left", n)
	}
	if failed := deliveries(t, reg, "failed"); failed < 3 {
		t.Fatalf("only %.0f retries in 500ms with a 50ms backoff", failed)
	}
}

// TestExpiringNotices moves an injected clock past the 7-day and 1-day
// marks of keys' expirations: one api_key.expiring each, none for a key
// revoked or moved meanwhile, and keys that existed before webhooks were
// configured are covered too.
func TestExpiringNotices(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New()
	f := newFixture(t, clock.Now)
	rcv := newReceiver(t)
	rcv.ignoreAge = true // the signatures' timestamps are the test clock's
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	days := func(n int64) *int64 { s := n * 86400; return &s }
	create := func(name string, expires *int64) *keystore.APIKey {
		k, err := f.store.Create(ctx, keystore.CreateParams{Name: name, Subject: "user_42", SecondsUntilExpiration: expires})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	change := func(action audit.Action, before, after *keystore.APIKey) {
		k := after
		if k == nil {
			k = before
		}
		if err := f.log.Record(ctx, &audit.Event{Action: action, APIKeyID: k.ID, Subject: k.Subject, Changes: audit.Diff(before, after)}); err != nil {
			t.Fatal(err)
		}
	}
	older := create("before webhooks", days(20)) // notices at +13d and +19d
	d, _ := f.dispatcher(t, srv.URL)
	poll := func() {
		t.Helper()
		if err := d.Poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	poll()
	soon := create("soon", days(10)) // notices at +3d and +9d
	change(audit.Created, nil, soon)
	revoked := create("revoked", days(10))
	change(audit.Created, nil, revoked)
	moved := create("moved", days(10))
	change(audit.Created, nil, moved)
	short := create("short", days(3)) // only the 1-day notice, at +2d
	change(audit.Created, nil, short)
	poll()
	clock.Advance(24 * time.Hour)
	r, err := f.store.Revoke(ctx, revoked.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	change(audit.Revoked, revoked, r)
	m, err := f.store.Update(ctx, moved.ID, keystore.UpdateParams{SecondsUntilExpiration: days(30)}) // now +31d
	if err != nil {
		t.Fatal(err)
	}
	change(audit.Updated, moved, m)

	expiring := func() map[string][]int {
		msgs, _ := rcv.got()
		out := map[string][]int{}
		for _, msg := range msgs {
			var data struct {
				APIKey struct{ ID, Name string } `json:"api_key"`
				Days   int                       `json:"days_before_expiration"`
			}
			if msg.Type != webhook.TypeExpiring || json.Unmarshal(msg.Data, &data) != nil {
				continue
			}
			out[data.APIKey.Name] = append(out[data.APIKey.Name], data.Days)
		}
		return out
	}
	day := 24 * time.Hour
	at := func(d time.Duration) time.Duration { return d - clock.Now().Sub(testclock.Start) }
	for _, step := range []struct {
		at   time.Duration // since the start
		want map[string][]int
	}{
		{day + time.Millisecond, map[string][]int{}},
		{2*day + time.Millisecond, map[string][]int{"short": {1}}},
		{3*day + time.Millisecond, map[string][]int{"short": {1}, "soon": {7}}},
		{9*day + time.Millisecond, map[string][]int{"short": {1}, "soon": {1, 7}}},
		{13*day + time.Millisecond, map[string][]int{"short": {1}, "soon": {1, 7}, "before webhooks": {7}}},
		{19*day + time.Millisecond, map[string][]int{"short": {1}, "soon": {1, 7}, "before webhooks": {1, 7}}},
		{24*day + time.Millisecond, map[string][]int{"short": {1}, "soon": {1, 7}, "before webhooks": {1, 7}, "moved": {7}}},
		{30*day + time.Millisecond, map[string][]int{"short": {1}, "soon": {1, 7}, "before webhooks": {1, 7}, "moved": {1, 7}}},
		{40 * day, map[string][]int{"short": {1}, "soon": {1, 7}, "before webhooks": {1, 7}, "moved": {1, 7}}},
	} {
		clock.Advance(at(step.at))
		poll()
		got := expiring()
		for _, d := range got {
			slices.Sort(d)
		}
		if !reflect.DeepEqual(got, step.want) {
			t.Fatalf("at +%s: api_key.expiring for %v, want %v", step.at, got, step.want)
		}
	}
	if n := f.rdb.ZCard(ctx, "keygate:{wh}:expiring").Val(); n != 0 {
		t.Fatalf("%d notices left", n)
	}
	msgs, _ := rcv.got()
	for _, m := range msgs {
		if m.Type == webhook.TypeExpiring && m.ID != "" && m.Timestamp == "" {
			t.Fatalf("message without a timestamp: %+v", m)
		}
	}
	_ = older
}
