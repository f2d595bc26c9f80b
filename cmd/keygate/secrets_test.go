package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
)

// exposure collects everything keygate shows the world besides the one
// response to create: its logs, its metrics, every other response (status
// line, headers and body), and what it stores. check fails the test when a
// secret appears anywhere in it.
type exposure struct {
	parts map[string]*strings.Builder
}

func newExposure() *exposure { return &exposure{parts: map[string]*strings.Builder{}} }

func (x *exposure) add(where, s string) {
	if x.parts[where] == nil {
		x.parts[where] = &strings.Builder{}
	}
	x.parts[where].WriteString(s)
	x.parts[where].WriteString("\n")
}

// call sends a request, records its response under "responses" and
// returns the status.
func (x *exposure) call(t *testing.T, method, url string, body string, header ...string) int {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	status, rh, b := testkit.Do(t, nil, method, url, h, strings.NewReader(body))
	var hs []string
	for k, vs := range rh {
		hs = append(hs, k+": "+strings.Join(vs, ", "))
	}
	sort.Strings(hs)
	// The request itself is left out: it carries the secret on purpose.
	x.add("responses", fmt.Sprintf("%d\n%s\n%s", status, strings.Join(hs, "\n"), b))
	return status
}

// check fails if any of the secrets (by name) appears in what was exposed.
func (x *exposure) check(t *testing.T, secrets map[string]string) {
	t.Helper()
	for where, b := range x.parts {
		s := b.String()
		if s == "" {
			t.Errorf("nothing collected from %s: the check would prove nothing", where)
		}
		for name, secret := range secrets {
			if secret != "" && strings.Contains(s, secret) {
				i := strings.Index(s, secret)
				t.Errorf("%s appears in %s: …%s…", name, where, s[max(0, i-200):min(len(s), i+len(secret)+50)])
			}
		}
	}
}

// secretParts returns what of a key's secret must never be seen: the whole
// secret and its random part (the ID part is the key's public ID).
func secretParts(name, secret string) map[string]string {
	random := secret[len(secret)-6-43 : len(secret)-6]
	return map[string]string{name + "'s secret": secret, name + "'s random part": random}
}

// TestSecretsNeverLeakEmbedded runs the walk-through on the embedded store
// with debug logging, plus the usual mistakes (a secret where an ID goes,
// in a body field, in the original URI's query), and checks that no
// secret and no admin token appears in a log line, the metrics, an error
// body or header, or the embedded store's files.
func TestSecretsNeverLeakEmbedded(t *testing.T) {
	dataDir := t.TempDir()
	addr := testkit.FreeAddr(t)
	base := "http://" + addr
	env := []string{"KEYGATE_DATA_DIR=" + dataDir, "KEYGATE_URL=" + base, "KEYGATE_LOG_LEVEL=debug"}
	serve := start(t, env, base+"/healthz", "serve", "--listen", addr)
	tokenBytes, err := os.ReadFile(filepath.Join(dataDir, adminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	x := newExposure()

	k1 := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "ci", "--subject", "user_1", "--scopes", "reports:read", "--json"))
	k2 := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "other", "--subject", "user_2", "--json"))
	if code, _, errOut := cli(t, env, k1.Secret+"\n", "keys", "verify", "-"); code != 0 {
		t.Fatalf("keys verify -: %d %s", code, errOut)
	}
	wrong := k1.Secret[:len(k1.Secret)-10] + "0000000000" // a typo: bad checksum
	auth := "Bearer " + token
	for _, c := range []struct {
		method, path, body string
		header             []string
		want               int
	}{
		{"POST", "/api_keys/verify", `{"secret":"` + k1.Secret + `"}`, []string{"Authorization", auth}, 200},
		{"POST", "/v1/api_keys/verify", `{"secret":"` + wrong + `"}`, []string{"Authorization", auth}, 404},
		{"POST", "/api_keys/verify", `{"secret":` + `["` + k1.Secret + `"]}`, []string{"Authorization", auth}, 400},
		{"POST", "/api_keys", `{"name":"n","subject":"s","secret":"` + k2.Secret + `"}`, []string{"Authorization", auth}, 400},
		{"GET", "/api_keys/" + k1.Secret, "", []string{"Authorization", auth}, 404},
		{"GET", "/api_keys/" + k1.ID + "/secret", "", []string{"Authorization", auth}, 404},
		{"GET", "/api_keys/" + k1.ID, "", []string{"Authorization", "Basic " + token}, 401},
		{"GET", "/api_keys", "", []string{"Authorization", "Bearer " + k1.Secret}, 401},
		{"GET", "/forward-auth?scopes=reports:read", "", []string{"Authorization", "Bearer " + k1.Secret}, 200},
		{"GET", "/forward-auth?scopes=admin", "", []string{"Authorization", "Bearer " + k1.Secret}, 403},
		{"GET", "/forward-auth", "", []string{"X-Api-Key", k2.Secret, "X-Forwarded-Uri", "/reports?api_key=" + k2.Secret}, 200},
		{"GET", "/forward-auth", "", []string{"X-Original-Uri", "/reports?api_key=" + k1.Secret}, 401},
		{"GET", "/forward-auth", "", []string{"Authorization", "Bearer " + wrong}, 401},
	} {
		if got := x.call(t, c.method, base+c.path, c.body, c.header...); got != c.want {
			t.Fatalf("%s %s: %d, want %d", c.method, c.path, got, c.want)
		}
	}
	mustCLI(t, env, "keys", "revoke", k1.ID, "--reason", "leak test")
	if got := x.call(t, "GET", base+"/forward-auth", "", "Authorization", "Bearer "+k1.Secret); got != 401 {
		t.Fatalf("forward-auth after revoke: %d", got)
	}
	mustCLI(t, env, "keys", "list", "--include-invalid")
	mustCLI(t, env, "keys", "get", k2.ID)
	if got := x.call(t, "GET", base+"/metrics", ""); got != 200 {
		t.Fatalf("/metrics: %d", got)
	}
	if code := serve.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	x.add("serve's log", serve.stderr.String())
	files, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	var stored strings.Builder
	for _, f := range files {
		if f.Name() == adminTokenFile {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dataDir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		x.add("the embedded store's "+f.Name(), string(b))
		stored.Write(b)
	}
	if !strings.Contains(stored.String(), k1.ID) || !strings.Contains(stored.String(), k2.ID) {
		t.Fatal("the embedded store's files do not hold the keys: the check would prove little")
	}
	if !strings.Contains(serve.stderr.String(), "forward-auth") || !strings.Contains(serve.stderr.String(), "level=DEBUG") {
		t.Fatalf("serve logged no debug lines: the check would prove little:\n%s", serve.stderr)
	}

	x.check(t, testkit.Merge(secretParts("k1", k1.Secret), secretParts("k2", k2.Secret), map[string]string{"the admin token": token}))
	// The token is printed once, on stdout, when it is generated.
	if n := strings.Count(serve.stdout.String(), token); n != 1 {
		t.Errorf("the admin token appears %d times on serve's stdout, want once", n)
	}
}

// TestSecretsNeverLeakRedis runs serve and a sidecar (debug logs, JSON) on
// a real redis-server with AOF on and an HMAC key, and checks that no
// secret, admin token or HMAC key appears in their logs, metrics, error
// responses, any value in Redis, or the AOF files. It also checks the
// sidecar's default throttling end to end.
func TestSecretsNeverLeakRedis(t *testing.T) {
	rs := redistest.Start(t, "--appendonly", "yes")
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Header.Get("X-Api-Key-Subject"))
	}))
	defer upstream.Close()
	const (
		tokenA  = "kg-admin-aaaaaaaaaaaaaaaaaaaaaaaa"
		tokenB  = "kg-admin-bbbbbbbbbbbbbbbbbbbbbbbb"
		hashKey = "kg-hmac-cccccccccccccccccccccccc"
	)
	addr, proxyAddr, opsAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	base, proxy := "http://"+addr, "http://"+proxyAddr
	env := []string{"KEYGATE_REDIS_URL=redis://" + rs.Addr, "KEYGATE_ADMIN_TOKENS=" + tokenA + "," + tokenB,
		"KEYGATE_ADMIN_TOKEN=" + tokenA, "KEYGATE_URL=" + base, "KEYGATE_HASH_KEY=" + hashKey,
		"KEYGATE_LOG_LEVEL=debug", "KEYGATE_LOG_FORMAT=json",
		"KEYGATE_THROTTLE_BURST=3", "KEYGATE_THROTTLE_FAILURES_PER_MINUTE=1"}
	serve := start(t, env, base+"/readyz", "serve", "--listen", addr)
	side := start(t, env, "http://"+opsAddr+"/readyz", "sidecar", "--upstream", upstream.URL, "--listen", proxyAddr,
		"--ops-listen", opsAddr, "--key-lookup", "header:Authorization:Bearer ,query:api_key")
	x := newExposure()

	k1 := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "svc", "--subject", "org_1", "--scopes", "reports:read", "--json"))
	k2 := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "svc2", "--subject", "org_2", "--json"))
	wrong := k2.Secret[:len(k2.Secret)-10] + "0000000000"
	for _, c := range []struct {
		url    string
		header []string
		want   int
	}{
		{proxy + "/reports", []string{"Authorization", "Bearer " + k1.Secret}, 200},
		{proxy + "/reports?api_key=" + k2.Secret, nil, 200},
		{proxy + "/reports", []string{"Authorization", "Bearer " + wrong}, 401},
		{base + "/forward-auth", []string{"Authorization", "Bearer " + k2.Secret, "X-Forwarded-Uri", "/x?api_key=" + k2.Secret}, 200},
		{base + "/api_keys/" + k1.ID, []string{"Authorization", "Bearer " + tokenB}, 200},
		{base + "/api_keys", []string{"Authorization", "Bearer " + hashKey}, 401},
	} {
		if got := x.call(t, "GET", c.url, "", c.header...); got != c.want {
			t.Fatalf("GET %s: %d, want %d", c.url, got, c.want)
		}
	}
	mustCLI(t, env, "keys", "revoke", k1.ID)
	// Failures from one address: the burst of 3 (the wrong secret above
	// was the first), then 429 (the next refill is a minute away); a valid
	// key still passes.
	for i, want := range []int{401, 401, 429, 429} {
		if got := x.call(t, "GET", proxy+"/reports", "", "Authorization", "Bearer "+k1.Secret); got != want {
			t.Fatalf("revoked key through the sidecar, try %d: %d, want %d", i+1, got, want)
		}
	}
	if got := x.call(t, "GET", proxy+"/reports", "", "Authorization", "Bearer "+k2.Secret); got != 200 {
		t.Fatalf("a valid key from a throttled address: %d, want 200", got)
	}
	mustCLI(t, env, "keys", "list", "--include-invalid")
	for _, u := range []string{base + "/metrics", "http://" + opsAddr + "/metrics"} {
		if got := x.call(t, "GET", u, ""); got != 200 {
			t.Fatalf("%s: %d", u, got)
		}
	}
	if code := side.stop(t); code != 0 {
		t.Fatalf("sidecar exited %d", code)
	}
	if code := serve.stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	x.add("serve's log", serve.stdout.String()+serve.stderr.String())
	x.add("the sidecar's log", side.stdout.String()+side.stderr.String())

	// Every value Redis holds, and the AOF that has every write.
	rdb := redis.NewClient(redistest.ClientOptions(rs.Addr))
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("reading Redis: %v, %d keys", err, len(keys))
	}
	for _, k := range keys {
		var v any
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			v = rdb.Get(ctx, k).Val()
		case "hash":
			v = rdb.HGetAll(ctx, k).Val()
		case "zset":
			v = rdb.ZRangeWithScores(ctx, k, 0, -1).Val()
		case "list":
			v = rdb.LRange(ctx, k, 0, -1).Val()
		case "set":
			v = rdb.SMembers(ctx, k).Val()
		default:
			t.Fatalf("key %s of unexpected type %s", k, typ)
		}
		x.add("Redis", fmt.Sprintf("%s = %q", k, v))
	}
	aof, _ := filepath.Glob(filepath.Join(rs.Dir, "appendonlydir", "*"))
	if len(aof) == 0 {
		t.Fatal("no AOF files")
	}
	for _, f := range aof {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		x.add("the AOF", string(b))
	}
	if !strings.Contains(side.stderr.String(), `"level":"DEBUG"`) {
		t.Fatalf("the sidecar logged no debug lines:\n%s", side.stderr)
	}
	x.check(t, testkit.Merge(secretParts("k1", k1.Secret), secretParts("k2", k2.Secret),
		map[string]string{"admin token A": tokenA, "admin token B": tokenB, "the HMAC key": hashKey}))
}
