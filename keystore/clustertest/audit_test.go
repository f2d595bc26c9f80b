package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/webhook"
	"github.com/redis/go-redis/v9"
)

// testAuditAndWebhooks records audit events and delivers them, an expiry
// notice and an exhausted-credits notice as webhooks through a client of
// the deployment: nothing meets CROSSSLOT, MOVED, ASK, TRYAGAIN or
// CLUSTERDOWN, and every message arrives.
func testAuditAndWebhooks(t *testing.T, d deployment) {
	ctx := context.Background()
	const ns = "kg-audit"
	errs := &clusterErrors{}
	rdb := d.client(t, 1, errs)
	store, _ := newStore(t, rdb, ns, func(o *keystore.Options) { o.LastUsedFlush = -1 })
	log := audit.New(rdb, audit.Options{Namespace: ns})

	var mu sync.Mutex
	got := map[string]string{} // webhook-id → type
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.Header.Get("webhook-id")] = string(body)
		mu.Unlock()
	}))
	defer srv.Close()
	dispatcher, err := webhook.New(rdb, webhook.Options{URLs: []string{srv.URL}, Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		Namespace: ns, Audit: log, Store: store, PollInterval: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := dispatcher.Poll(ctx); err != nil { // sets the cursor
		t.Fatal(err)
	}
	var ids []string
	for i := range 30 {
		k, err := store.Create(ctx, keystore.CreateParams{Name: fmt.Sprintf("k%d", i), Subject: fmt.Sprintf("user_%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		e := &audit.Event{Action: audit.Created, APIKeyID: k.ID, Subject: k.Subject, Changes: audit.Diff(nil, k)}
		if err := log.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	// Expiring within a day: its 1-day notice is due at once.
	soon := int64(3600)
	k, err := store.Create(ctx, keystore.CreateParams{Name: "soon", Subject: "user_x", SecondsUntilExpiration: &soon})
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, ns+":{wh}:expiring", redis.Z{Score: float64(*k.Expiration - 86_400_000), Member: k.ID + " 1"}).Err(); err != nil {
		t.Fatal(err)
	}
	webhook.CreditsExhausted(rdb, ns, slog.New(slog.DiscardHandler), nil)(k)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { dispatcher.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == len(ids)+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d webhooks delivered", n, len(ids)+2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	page, err := log.List(ctx, audit.Filter{Limit: 100})
	if err != nil || len(page.Data) != len(ids) {
		t.Fatalf("listing: %d events, %v", len(page.Data), err)
	}
	if s := errs.String(); s != "" {
		t.Fatalf("cluster errors: %s", s)
	}
}
