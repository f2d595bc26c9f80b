package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	goredis "github.com/redis/go-redis/v9"
)

// oldLayout creates n keys in Redis and leaves them in the listing indexes
// of an earlier keygate only: <ns>:keys and <ns>:subject:<subject>.
func oldLayout(t *testing.T, addr string, n int) []string {
	t.Helper()
	ctx := context.Background()
	rdb := goredis.NewClient(redistest.ClientOptions(addr))
	defer rdb.Close()
	s, err := keystore.New(rdb, keystore.Options{LastUsedFlush: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []string
	for i := range n {
		k, err := s.Create(ctx, keystore.CreateParams{Name: fmt.Sprintf("old %d", i), Subject: "user_old"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k.ID)
		z := goredis.Z{Score: float64(k.CreatedAt), Member: k.ID}
		rdb.ZAdd(ctx, "keygate:keys", z)
		rdb.ZAdd(ctx, "keygate:subject:user_old", z)
	}
	for _, set := range []string{"keygate:sub:{user_old}:valid", "keygate:{all}:valid"} {
		for _, id := range ids {
			rdb.ZRem(ctx, set, id)
		}
	}
	return ids
}

// TestStoreMigrate moves an earlier version's indexes with "keygate store
// migrate", then lets serve move them at start, and lists the keys.
func TestStoreMigrate(t *testing.T) {
	redis := redistest.Start(t)
	addr := freeAddr(t)
	env := []string{"KEYGATE_REDIS_URL=redis://" + redis.Addr, "KEYGATE_ADMIN_TOKENS=admintok", "KEYGATE_ADMIN_TOKEN=admintok", "KEYGATE_URL=http://" + addr}

	oldLayout(t, redis.Addr, 3)
	if out := mustCLI(t, env, "store", "migrate"); !strings.HasPrefix(out, "moved 3 keys") {
		t.Fatalf("keygate store migrate: %q, want it to have moved 3 keys", out)
	}
	if out := mustCLI(t, env, "store", "migrate"); !strings.HasPrefix(out, "moved 0 keys") {
		t.Fatalf("keygate store migrate again: %q, want 0 keys", out)
	}

	ids := append(oldLayout(t, redis.Addr, 2), "") // two more, left to serve
	serve := start(t, env, "http://"+addr+"/readyz", "serve", "--listen", addr)
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, out, errOut := cli(t, env, "", "keys", "list")
		if code == 0 {
			if !strings.Contains(out, "5 of 5") || !strings.Contains(out, ids[0]) {
				t.Fatalf("keys list after serve's migration:\n%s", out)
			}
			break
		}
		if code != exitUnreachable || time.Now().After(deadline) {
			t.Fatalf("keys list while serve migrates: exit %d\n%s%s\nserve:\n%s", code, out, errOut, serve.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(serve.stderr.String(), "keys=2") {
		t.Errorf("serve did not log the 2 keys it moved:\n%s", serve.stderr)
	}
}
