package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// TestBadConfigurationIsOneLine checks that every bad value stops the start
// with exit status 2 and one line naming the flag.
func TestBadConfigurationIsOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want string // in the line
	}{
		{"bad duration flag", []string{"serve", "--cache-ttl", "soon"}, env(), "cache-ttl"},
		{"bad duration env", []string{"serve"}, env("KEYGATE_CACHE_TTL", "soon"), "KEYGATE_CACHE_TTL"},
		{"negative ttl", []string{"serve", "--cache-ttl=-1s"}, env(), "--cache-ttl"},
		{"negative replica wait", []string{"serve", "--replica-wait=-1s"}, env(), "--replica-wait"},
		{"zero flush", []string{"serve", "--last-used-flush=0s"}, env(), "--last-used-flush"},
		{"bad log format", []string{"serve", "--log-format", "xml"}, env(), "--log-format"},
		{"bad log level", []string{"serve"}, env("KEYGATE_LOG_LEVEL", "loud"), "--log-level"},
		{"bad redis url", []string{"serve", "--redis-url", "http://x"}, env(), "--redis-url"},
		{"url and addrs", []string{"serve", "--redis-url", "redis://a", "--redis-addrs", "b:1"}, env(), "--redis-addrs"},
		{"cluster without addrs", []string{"serve", "--redis-cluster"}, env(), "--redis-cluster"},
		{"bad key prefix", []string{"serve", "--key-prefix", "ak-", "--data-dir", "@tmp"}, env(), "--key-prefix"},
		{"redis without tokens", []string{"serve", "--redis-url", "redis://127.0.0.1:1"}, env(), "--admin-tokens"},
		{"short admin token", []string{"serve", "--redis-url", "redis://127.0.0.1:1"}, env("KEYGATE_ADMIN_TOKENS", "kg-admin-"+strings.Repeat("a", 32)+","+strings.Repeat("s", 31)),
			"--admin-tokens (KEYGATE_ADMIN_TOKENS): admin token 2 has 31 characters; each needs at least 32"},
		{"short saved admin token", []string{"serve", "--data-dir", "@short-token"}, env(), "admin-token: admin token 1 has 5 characters"},
		{"bad accepted key prefix", []string{"serve", "--key-prefixes-accepted", "ak_,old-", "--data-dir", "@tmp"}, env(), "--key-prefixes-accepted"},
		{"hash keys without id", []string{"serve", "--data-dir", "@tmp"}, env("KEYGATE_HASH_KEYS", "v2:new-secret,old-secret"), "--hash-keys: entry 2 must be id:secret"},
		{"hash keys named sha256", []string{"serve", "--hash-keys", "sha256:x", "--data-dir", "@tmp"}, env(), "--hash-keys: entry 1: the id"},
		{"hash keys twice", []string{"serve", "--hash-keys", "a:x,a:y", "--data-dir", "@tmp"}, env(), `--hash-keys: the id "a" is given twice`},
		{"unknown flag", []string{"serve", "--nope"}, env(), "nope"},
		{"missing token file", []string{"serve", "--admin-tokens-file", "/nonexistent/tokens"}, env(), "--admin-tokens-file"},
		{"short audit retention", []string{"serve", "--audit-retention", "1m"}, env(), "--audit-retention"},
		{"webhook without secret", []string{"serve"}, env("KEYGATE_WEBHOOK_URLS", "http://127.0.0.1:9/h"), "--webhook-secret (KEYGATE_WEBHOOK_SECRET) is required"},
		{"bad webhook url", []string{"serve", "--webhook-urls", "ftp://x", "--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, env(), "--webhook-urls"},
		{"short webhook secret", []string{"serve", "--webhook-urls", "http://127.0.0.1:9/h", "--webhook-secret", "whsec_c2hvcnQ="}, env(), "--webhook-secret"},
		{"sidecar without upstream", []string{"sidecar", "--redis-url", "redis://127.0.0.1:1"}, env(), "--upstream"},
		{"sidecar bad upstream", []string{"sidecar", "--upstream", "ftp://x", "--redis-url", "redis://127.0.0.1:1"}, env(), "--upstream"},
		{"sidecar without redis", []string{"sidecar", "--upstream", "http://127.0.0.1:1"}, env(), "--redis-url"},
		{"unknown command", []string{"frobnicate"}, env(), "frobnicate"},
		{"keys without token", []string{"keys", "list", "--data-dir", "@tmp"}, env(), "KEYGATE_ADMIN_TOKEN"},
		{"keys bad expiry", []string{"keys", "create", "--name", "n", "--subject", "s", "--expires-in", "-1h", "--admin-token", "t", "--url", "http://127.0.0.1:1"}, env(), "--expires-in"},
		{"keys get without id", []string{"keys", "get", "--admin-token", "t"}, env(), "key ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, a := range tc.args {
				switch a {
				case "@tmp":
					tc.args[i] = t.TempDir()
				case "@short-token":
					tc.args[i] = t.TempDir()
					if err := os.WriteFile(filepath.Join(tc.args[i], adminTokenFile), []byte("short\n"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &stdout, &stderr, tc.env)
			if code != exitUsage {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if tc.name != "unknown command" && len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want 1:\n%s", len(lines), stderr.String())
			}
			if !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q does not name %s", lines[0], tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"serve", "--help"}, {"sidecar", "--help"}, {"keys", "create", "--help"}, {"help"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, strings.NewReader(""), &stdout, &stderr, env()); code != exitOK {
			t.Errorf("%v: exit status %d, want 0", args, code)
		}
		if out := stdout.String() + stderr.String(); !strings.Contains(out, "keygate") {
			t.Errorf("%v printed no help:\n%s", args, out)
		}
	}
	var stdout bytes.Buffer
	run([]string{"serve", "--help"}, nil, &stdout, &stdout, env())
	for _, want := range []string{"--redis-url", "KEYGATE_REDIS_URL", "--cache-ttl", "KEYGATE_CACHE_TTL", "default 30s"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("serve --help does not mention %s", want)
		}
	}
}
