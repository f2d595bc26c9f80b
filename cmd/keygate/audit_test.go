package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/redis/go-redis/v9"
)

const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestServeKilledDuringADelivery runs serve with a token file and a webhook
// URL on a real redis-server: a read token is refused a create with a
// clear message; the admin's create is delivered to the receiver, whose
// first request is held while serve is killed with SIGKILL; a new serve
// delivers it, signed, after the lease. keygate audit lists the event.
func TestServeKilledDuringADelivery(t *testing.T) {
	rp := redistest.Start(t)
	wh, err := standardwebhooks.NewWebhook(webhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	received := map[string]int{}
	var bodies []string
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(400)
			return
		}
		first := false
		once.Do(func() { first = true; close(held) })
		if first {
			select { // serve is killed meanwhile
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		mu.Lock()
		received[r.Header.Get("webhook-id")]++
		bodies = append(bodies, string(body))
		mu.Unlock()
	}))
	defer receiver.Close()
	defer close(release)

	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("# who may do what\nroot admin kg-root-0a6f3c9e1d7b2f4a8c5e0d3b6a9f\nauditor read kg-read-9c3f7a2e5d1b8f4c0a6e3d9b2f5a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testkit.FreeAddr(t)
	base := "http://" + addr
	env := []string{"KEYGATE_REDIS_URL=redis://" + rp.Addr, "KEYGATE_ADMIN_TOKENS_FILE=" + tokens,
		"KEYGATE_WEBHOOK_URLS=" + receiver.URL + "/keygate", "KEYGATE_WEBHOOK_SECRET=" + webhookSecret,
		"KEYGATE_WEBHOOK_TIMEOUT=1s", "KEYGATE_URL=" + base}
	root := append(env, "KEYGATE_ADMIN_TOKEN=kg-root-0a6f3c9e1d7b2f4a8c5e0d3b6a9f")
	auditor := append(env, "KEYGATE_ADMIN_TOKEN=kg-read-9c3f7a2e5d1b8f4c0a6e3d9b2f5a")

	first := start(t, env, base+"/readyz", "serve", "--listen", addr)
	rdb := redis.NewClient(redistest.ClientOptions(rp.Addr))
	defer rdb.Close()
	waitUntil(t, "the webhook cursor set", func() bool {
		return rdb.Exists(context.Background(), "keygate:{wh}:cursor").Val() == 1
	})

	code, _, errOut := cli(t, auditor, "", "keys", "create", "--name", "x", "--subject", "user_1")
	if code != exitRefused || !strings.Contains(errOut, "403 authorization_invalid") || !strings.Contains(errOut, `"auditor" has the role read`) {
		t.Fatalf("create with a read token: exit %d, %s", code, errOut)
	}
	key := decode[createdKey](t, mustCLI(t, root, "keys", "create", "--name", "svc", "--subject", "org_9", "--json"))
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook within 10s of the create")
	}
	first.cmd.Process.Signal(syscall.SIGKILL)
	<-first.done
	killed := time.Now()
	start(t, env, base+"/readyz", "serve", "--listen", addr)
	waitUntil(t, "the create delivered by the new serve", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bodies) > 0
	})
	t.Logf("FIGURES serve killed during a delivery: delivered by the next serve %s after the kill", time.Since(killed).Round(10*time.Millisecond))
	mu.Lock()
	var msg struct {
		Type string      `json:"type"`
		Data audit.Event `json:"data"`
	}
	json.Unmarshal([]byte(bodies[0]), &msg)
	mu.Unlock()
	if msg.Type != "api_key.created" || msg.Data.APIKeyID != key.ID || msg.Data.Actor.Name != "root" {
		t.Fatalf("webhook: %s", bodies[0])
	}

	page := decode[audit.Page](t, mustCLI(t, auditor, "audit", "--key-id", key.ID, "--json"))
	if len(page.Data) != 1 || page.Data[0].ID != msg.Data.ID || page.Data[0].Action != audit.Created {
		t.Fatalf("keygate audit --json: %+v", page)
	}
	table := mustCLI(t, auditor, "audit")
	if !strings.Contains(table, "root") || !strings.Contains(table, "api_key.created") || !strings.Contains(table, key.ID) {
		t.Fatalf("keygate audit:\n%s", table)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
