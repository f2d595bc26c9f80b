package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	goredis "github.com/redis/go-redis/v9"
)

// TestMoveEmbeddedToRedis follows the README's way out of the embedded
// store: keys created, used and revoked on it; a second serve on the same
// data directory refused; the data exported with serve stopped, imported
// into a real redis-server, and served from there: every key verifies,
// every revoked key stays revoked, with its reason and last use.
func TestMoveEmbeddedToRedis(t *testing.T) {
	dataDir := t.TempDir()
	addr := testkit.FreeAddr(t)
	base := "http://" + addr
	const hashKey = "kg-hmac-move-test-0123456789abcdef"
	env := []string{"KEYGATE_DATA_DIR=" + dataDir, "KEYGATE_URL=" + base, "KEYGATE_HASH_KEY=" + hashKey, "KEYGATE_LAST_USED_FLUSH=100ms"}
	serve := start(t, env, base+"/healthz", "serve", "--listen", addr)

	// One process per data directory.
	code, out, errOut := cli(t, env, "", "serve", "--listen", testkit.FreeAddr(t))
	if code != exitUnreachable || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
		!strings.Contains(errOut, "in use by another keygate process") || !strings.Contains(errOut, fmt.Sprint(serve.cmd.Process.Pid)) {
		t.Fatalf("second serve on the data dir: exit %d, want %d and one line naming the first\nstdout: %s\nstderr: %s", code, exitUnreachable, out, errOut)
	}

	tokenBytes, _ := os.ReadFile(filepath.Join(dataDir, adminTokenFile))
	token := strings.TrimSpace(string(tokenBytes))
	var keys []createdKey
	for i := range 30 {
		_, body := api(t, base, token, "POST", "/v1/api_keys", fmt.Sprintf(`{"name":"key %d","subject":"user_%d","scopes":["reports:read"]}`, i, i%4))
		keys = append(keys, decode[createdKey](t, body))
	}
	for _, k := range keys[:20] {
		if resp := forwardAuth(t, base, k.Secret); resp.StatusCode != 200 {
			t.Fatalf("forward-auth: %d", resp.StatusCode)
		}
	}
	for i, k := range keys[10:] {
		if i%2 == 0 {
			api(t, base, token, "POST", "/v1/api_keys/"+k.ID+"/revoke", `{"revocation_reason":"moved `+k.ID+`"}`)
		}
	}
	if code := serve.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	// What the embedded store holds, read by a fresh serve.
	before := map[string]map[string]any{}
	serve = start(t, env, base+"/healthz", "serve", "--listen", addr)
	for _, k := range keys {
		_, body := api(t, base, token, "GET", "/v1/api_keys/"+k.ID, "")
		before[k.ID] = decode[map[string]any](t, body)
	}

	// Export needs the directory: while serve runs it is refused.
	dump := filepath.Join(t.TempDir(), "keygate.dump")
	if code, _, errOut := cli(t, env, "", "store", "export", "--out", dump); code == 0 || !strings.Contains(errOut, "in use") {
		t.Fatalf("export while serve runs: exit %d: %s", code, errOut)
	}
	serve.stop(t)
	_, _, errOut = cli(t, env, "", "store", "export", "--out", dump)
	if !strings.Contains(errOut, "exported ") {
		t.Fatalf("export: %s", errOut)
	}
	if fi, err := os.Stat(dump); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dump file: %v %v, want mode 0600", err, fi)
	}
	b, _ := os.ReadFile(dump)
	for _, k := range keys {
		if strings.Contains(string(b), k.Secret) || strings.Contains(string(b), k.Secret[len(k.Secret)-49:]) {
			t.Fatal("the dump holds a secret")
		}
	}

	rs := redistest.Start(t)
	redisEnv := []string{"KEYGATE_REDIS_URL=redis://" + rs.Addr, "KEYGATE_HASH_KEY=" + hashKey}
	if code, _, errOut := cli(t, redisEnv, "", "store", "import", "--in", dump); code != 0 || !strings.Contains(errOut, "imported ") {
		t.Fatalf("import: exit %d: %s", code, errOut)
	}
	if code, _, errOut := cli(t, redisEnv, "", "store", "import", "--in", dump); code != exitRefused || !strings.Contains(errOut, "already holds") {
		t.Fatalf("second import: exit %d, want %d: %s", code, exitRefused, errOut)
	}

	addr = testkit.FreeAddr(t)
	base = "http://" + addr
	redisEnv = append(redisEnv, "KEYGATE_ADMIN_TOKENS="+token, "KEYGATE_ADMIN_TOKEN="+token, "KEYGATE_URL="+base)
	serve = start(t, redisEnv, base+"/readyz", "serve", "--listen", addr)
	defer serve.stop(t)
	for i, k := range keys {
		_, body := api(t, base, token, "GET", "/v1/api_keys/"+k.ID, "")
		if got := decode[map[string]any](t, body); fmt.Sprint(got) != fmt.Sprint(before[k.ID]) {
			t.Errorf("key %d on Redis:\n%v\nwas on the embedded store:\n%v", i, got, before[k.ID])
		}
		code, body := api(t, base, token, "POST", "/api_keys/verify", `{"secret":"`+k.Secret+`"}`)
		revoked := before[k.ID]["revoked"] == true
		switch {
		case revoked && (code != 404 || !strings.Contains(body, "api_key_revoked")):
			t.Errorf("revoked key %d verifies on Redis: %d %s", i, code, body)
		case !revoked && code != 200:
			t.Errorf("key %d does not verify on Redis: %d %s", i, code, body)
		}
		if resp := forwardAuth(t, base, k.Secret); (resp.StatusCode == 200) == revoked {
			t.Errorf("forward-auth of key %d (revoked %v) on Redis: %d", i, revoked, resp.StatusCode)
		}
	}
	list := decode[struct {
		TotalCount int `json:"total_count"`
	}](t, mustCLI(t, redisEnv, "keys", "list", "--include-invalid", "--json"))
	if list.TotalCount != len(keys) {
		t.Errorf("Redis lists %d keys, want %d", list.TotalCount, len(keys))
	}
}

// api calls the admin API and returns the status and body; it fails the
// test on a status other than 200, 404 and 401.
func api(t *testing.T, base, token, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 && resp.StatusCode != 404 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, string(b)
}

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

// migrateToken is TestStoreMigrate's admin token (32 characters at least).
const migrateToken = "kg-admin-migrate-test-0123456789abcdef"

// TestStoreMigrate moves an earlier version's indexes with "keygate store
// migrate", then lets serve move them at start, and lists the keys.
func TestStoreMigrate(t *testing.T) {
	redis := redistest.Start(t)
	addr := testkit.FreeAddr(t)
	env := []string{"KEYGATE_REDIS_URL=redis://" + redis.Addr, "KEYGATE_ADMIN_TOKENS=" + migrateToken, "KEYGATE_ADMIN_TOKEN=" + migrateToken, "KEYGATE_URL=http://" + addr}

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
