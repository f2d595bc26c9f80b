package sidecar

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
)

// env is a store and a verifier on one Redis, with a hand-moved clock and
// a metrics registry of its own.
type env struct {
	store    *keystore.Store
	verifier *keystore.Verifier
	clock    *testclock.Clock
	reg      *prometheus.Registry
}

func newEnv(t *testing.T, rdb redis.UniversalClient) *env {
	t.Helper()
	c := testclock.New()
	reg := prometheus.NewRegistry()
	store, v := keystoretest.New(t, rdb, keystore.Options{Now: c.Now, LastUsedFlush: -1}, keystore.VerifierOptions{Registerer: reg})
	return &env{store: store, verifier: v, clock: c, reg: reg}
}

func (e *env) create(t *testing.T, p keystore.CreateParams) *keystore.APIKey {
	t.Helper()
	return keystoretest.Create(t, e.store, p)
}

// fixtures are the keys every end-to-end test runs through.
type fixtures struct {
	full    *keystore.APIKey // scopes reports:read reports:write, claims
	limited *keystore.APIKey // no scopes, no claims
	revoked *keystore.APIKey
	expired *keystore.APIKey
	deleted *keystore.APIKey // well-formed secret of a key that no longer exists
}

// fixtures creates the keys, then revokes, expires (by moving the clock
// past a 1-second expiry) and deletes the ones that need it.
func (e *env) fixtures(t *testing.T) fixtures {
	t.Helper()
	ctx := context.Background()
	one := int64(1)
	f := fixtures{
		full: e.create(t, keystore.CreateParams{Name: "CI key", Subject: "user_full",
			Scopes: []string{"reports:read", "reports:write"}, Claims: json.RawMessage(`{ "plan": "pro", "seats": 3 }`)}),
		limited: e.create(t, keystore.CreateParams{Name: "limited", Subject: "user_limited"}),
		revoked: e.create(t, keystore.CreateParams{Subject: "user_revoked"}),
		expired: e.create(t, keystore.CreateParams{Subject: "user_expired", SecondsUntilExpiration: &one}),
		deleted: e.create(t, keystore.CreateParams{Subject: "user_deleted"}),
	}
	if _, err := e.store.Revoke(ctx, f.revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Delete(ctx, f.deleted.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	return f
}

// upstream is the test application behind the proxy, with handlers that
// the streaming and cancellation tests steer.
type upstream struct {
	*testkit.Upstream

	// sse handshake: the handler sends event 1, waits for the client to
	// say it has read it, then sends event 2.
	sseRead chan struct{}
	// upload handshake: the handler says when the first bytes arrived.
	uploadStarted chan struct{}
	// hang: the handler blocks until its request is cancelled, then says
	// so on hangCancelled.
	hangStarted   chan struct{}
	hangCancelled chan struct{}
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{
		sseRead:       make(chan struct{}, 1),
		uploadStarted: make(chan struct{}, 1),
		hangStarted:   make(chan struct{}, 1),
		hangCancelled: make(chan struct{}, 1),
	}
	u.Upstream = testkit.NewUpstream(t, map[string]http.HandlerFunc{
		"/sse":    u.sse,
		"/upload": u.upload,
		"/hang":   u.hang,
		"/boom": func(w http.ResponseWriter, r *http.Request) {
			u.Record(r, "", 0)
			http.Error(w, "the app failed", http.StatusInternalServerError)
		},
	})
	return u
}

func (u *upstream) sse(w http.ResponseWriter, r *http.Request) {
	u.Record(r, "", 0)
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, "data: one\n\n")
	http.NewResponseController(w).Flush()
	select {
	case <-u.sseRead:
	case <-r.Context().Done():
		return
	case <-time.After(10 * time.Second): // the client never got event 1
		return
	}
	io.WriteString(w, "data: two\n\n")
}

func (u *upstream) upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := r.Body.Read(buf)
		if m > 0 && n == 0 {
			u.uploadStarted <- struct{}{}
		}
		h.Write(buf[:m])
		n += int64(m)
		if err != nil {
			break
		}
	}
	u.Record(r, hex.EncodeToString(h.Sum(nil)), n)
	io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
}

func (u *upstream) hang(w http.ResponseWriter, r *http.Request) {
	u.Record(r, "", 0)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	http.NewResponseController(w).Flush()
	u.hangStarted <- struct{}{}
	select {
	case <-r.Context().Done():
		u.hangCancelled <- struct{}{}
	case <-time.After(10 * time.Second):
	}
}

func with(h http.Header, kv ...string) http.Header {
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
