package webhook_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/webhook"
	"github.com/redis/go-redis/v9"
)

// TestCreditsExhausted spends a key's credits through a verifier wired as
// serve wires it: the verification that spends the last credit queues one
// api_key.credits_exhausted, however many are refused after it; credits
// set again and spent again make a second one.
func TestCreditsExhausted(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, time.Now)
	rcv := newReceiver(t)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	d, _ := f.dispatcher(t, srv.URL)
	run(t, d)
	f.waitStarted(t)
	v, err := keystore.NewVerifier(f.store, keystore.VerifierOptions{
		CreditsExhausted: webhook.CreditsExhausted(f.rdb, "keygate", quiet, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	k, err := f.store.Create(ctx, keystore.CreateParams{Name: "metered", Subject: "org_7", Credits: &keystore.Credits{Remaining: 3}})
	if err != nil {
		t.Fatal(err)
	}
	verify := func(n int) (admitted int) {
		for range n {
			if _, err := v.Verify(ctx, k.Secret, keystore.SourceAPI); err == nil {
				admitted++
			}
		}
		return admitted
	}
	exhausted := func() []message {
		msgs, _ := rcv.got()
		var out []message
		for _, m := range msgs {
			if m.Type == webhook.TypeCreditsExhausted {
				out = append(out, m)
			}
		}
		return out
	}
	if n := verify(6); n != 3 {
		t.Fatalf("%d of 6 admitted with 3 credits", n)
	}
	testkit.WaitFor(t, "api_key.credits_exhausted", 10*time.Second, func() bool { return len(exhausted()) == 1 })
	var data struct {
		APIKey keystore.APIKey `json:"api_key"`
	}
	if err := json.Unmarshal(exhausted()[0].Data, &data); err != nil || data.APIKey.ID != k.ID ||
		data.APIKey.Credits == nil || data.APIKey.Credits.Remaining != 0 || data.APIKey.Secret != "" {
		t.Fatalf("message data %s (%v)", exhausted()[0].Data, err)
	}
	if _, err := f.store.Update(ctx, k.ID, keystore.UpdateParams{Credits: &keystore.Credits{Remaining: 2}}); err != nil {
		t.Fatal(err)
	}
	if n := verify(4); n != 2 {
		t.Fatalf("%d of 4 admitted with 2 credits", n)
	}
	testkit.WaitFor(t, "a second api_key.credits_exhausted", 10*time.Second, func() bool { return len(exhausted()) == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := len(exhausted()); n != 2 {
		t.Fatalf("%d messages for two exhaustions", n)
	}
}

// TestNothingSecretStored makes every kind of change through the admin
// API, with webhooks delivered, then reads everything Redis holds: no
// secret anywhere, and no digest (raw, hex or base64) in any audit event,
// webhook state or webhook received.
func TestNothingSecretStored(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, time.Now)
	rcv := newReceiver(t)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	rcv.setStatus(503) // leave some deliveries pending in Redis
	d, _ := f.dispatcher(t, srv.URL)
	run(t, d)
	f.waitStarted(t)
	v, err := keystore.NewVerifier(f.store, keystore.VerifierOptions{CreditsExhausted: webhook.CreditsExhausted(f.rdb, "keygate", quiet, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	const token = "kg-admin-7c1d93e0a4b2f6a8e1c05d3b97f4"
	h, err := adminapi.New(adminapi.Options{Store: f.store, Verifier: v, AdminTokens: []string{token}, Audit: f.log, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string) []byte {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
	var secrets []string
	for i, body := range []string{
		`{"name":"a","subject":"user_1","scopes":["x"],"claims":{"team":"ops"},"description":"d","seconds_until_expiration":3600}`,
		`{"name":"b","subject":"user_1","credits":{"remaining":1}}`,
		`{"name":"c","subject":"user_2","rate_limits":[{"name":"default","limit":10,"duration_ms":60000}]}`,
	} {
		var k keystore.APIKey
		json.Unmarshal(call("POST", "/v1/api_keys", body), &k)
		secrets = append(secrets, k.Secret)
		call("POST", "/v1/api_keys/verify", `{"secret":"`+k.Secret+`"}`)
		call("PATCH", "/v1/api_keys/"+k.ID, `{"scopes":["y","z"],"description":"`+k.Secret[:20]+`-is-not-the-secret"}`)
		switch i {
		case 0:
			call("POST", "/v1/api_keys/"+k.ID+"/revoke", `{"revocation_reason":"rotated"}`)
		case 1:
			call("DELETE", "/v1/api_keys/"+k.ID, "")
		}
	}
	testkit.WaitFor(t, "audit events and credits turned into deliveries", 10*time.Second, func() bool {
		return f.rdb.HLen(ctx, "keygate:{wh}:body").Val() >= 9
	})
	rcv.setStatus(0)
	testkit.WaitFor(t, "some delivered", 10*time.Second, func() bool { m, _ := rcv.got(); return len(m) >= 9 })
	rcv.setStatus(503)
	call("POST", "/v1/api_keys", `{"name":"late","subject":"user_3"}`) // pending at the scan

	var needles []string // what no event may hold
	for _, s := range secrets {
		sum := sha256.Sum256([]byte(s))
		needles = append(needles, s, string(sum[:]), hex.EncodeToString(sum[:]),
			base64.StdEncoding.EncodeToString(sum[:]), base64.RawURLEncoding.EncodeToString(sum[:]))
	}
	keys, err := f.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	scanned := 0
	for _, key := range keys {
		values := dumpValues(t, f.rdb, key)
		eventLike := key == f.log.Key() || strings.Contains(key, "{wh}")
		for _, v := range values {
			for i, n := range needles {
				secretNeedle := i%5 == 0
				if (secretNeedle || eventLike) && strings.Contains(v, n) {
					t.Errorf("%s holds a secret or digest: %q", key, v)
				}
			}
		}
		if eventLike {
			scanned += len(values)
		}
	}
	msgs, _ := rcv.got()
	for _, m := range msgs {
		for _, n := range needles {
			if strings.Contains(m.Body, n) {
				t.Errorf("webhook %s holds a secret or digest: %s", m.ID, m.Body)
			}
		}
	}
	events, _ := f.log.List(ctx, audit.Filter{Limit: 100})
	t.Logf("FIGURES scanned %d Redis keys (%d values of audit events and webhook state), %d webhooks received, %d audit events: no secret, no digest",
		len(keys), scanned, len(msgs), len(events.Data))
	if len(events.Data) < 9 || scanned < 9 {
		t.Fatalf("too little to scan: %d events, %d values", len(events.Data), scanned)
	}
}

// dumpValues reads every string a Redis key holds, whatever its type.
func dumpValues(t *testing.T, rdb *redis.Client, key string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	var err error
	switch rdb.Type(ctx, key).Val() {
	case "string":
		var v string
		v, err = rdb.Get(ctx, key).Result()
		out = []string{v}
	case "hash":
		var h map[string]string
		h, err = rdb.HGetAll(ctx, key).Result()
		for f, v := range h {
			out = append(out, f, v)
		}
	case "zset":
		out, err = rdb.ZRange(ctx, key, 0, -1).Result()
	case "list":
		out, err = rdb.LRange(ctx, key, 0, -1).Result()
	case "set":
		out, err = rdb.SMembers(ctx, key).Result()
	case "none":
	default:
		t.Fatalf("%s: a type the scan does not read", key)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOnTheEmbeddedStore runs the queue's scripts on miniredis, which the
// embedded store is: events, an expiry notice and a notification arrive.
func TestOnTheEmbeddedStore(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	store, err := keystore.New(rdb, keystore.Options{LastUsedFlush: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f := &fixture{rdb: rdb, store: store, log: audit.New(rdb, audit.Options{}), clock: time.Now}
	rcv := newReceiver(t)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	d, _ := f.dispatcher(t, srv.URL)
	if err := d.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	ids := f.record(t, 3)
	hour := int64(3600)
	k, err := store.Create(ctx, keystore.CreateParams{Name: "soon", Subject: "s", SecondsUntilExpiration: &hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.log.Record(ctx, &audit.Event{Action: audit.Created, APIKeyID: k.ID, Subject: "s", Changes: audit.Diff(nil, k)}); err != nil {
		t.Fatal(err)
	}
	if err := webhook.Notify(ctx, rdb, "keygate", "crx_1", webhook.TypeCreditsExhausted, map[string]string{"k": "v"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// The 1-day notice of a key created with an hour to live is not
	// scheduled: it was past when the key was created.
	if err := d.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	msgs, _ := rcv.got()
	for _, id := range append(ids, "crx_1") {
		if _, ok := msgs[id]; !ok {
			t.Fatalf("%s not delivered: %v", id, msgs)
		}
	}
	if len(msgs) != 5 {
		t.Fatalf("%d messages, want 5", len(msgs))
	}
}
