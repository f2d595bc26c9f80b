package clerk

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/syncbuf"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/prometheus/client_golang/prometheus"
)

const installHint = "run `npm ci` in interop/clerk (or `npm ci --prefix interop/clerk` from the repository root; make test does it)"

// TestClerkSDK runs clerk_interop.mjs, Clerk's own SDK, against the admin
// API served on a loopback listener over a real redis-server.
func TestClerkSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: install Node.js 20.9 or later, then %s", installHint)
	}
	if _, err := os.Stat("node_modules/@clerk/backend/package.json"); err != nil {
		t.Fatalf("@clerk/backend is not installed: %s", installHint)
	}

	rdb := redistest.Server(t)
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	store, err := keystore.New(rdb, keystore.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	reg := prometheus.NewRegistry()
	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{Registerer: reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { verifier.Close() })
	const token = "kg-interop-admin-token-51d0a9c3e7f2b846"
	h, err := adminapi.New(adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{token}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range []string{"/api_keys", "/api_keys/", "/v1/api_keys", "/v1/api_keys/"} {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "clerk_interop.mjs")
	cmd.Env = append(os.Environ(), "KEYGATE_URL="+srv.URL, "KEYGATE_ADMIN_TOKEN="+token, "NODE_NO_WARNINGS=1")
	out, err := cmd.CombinedOutput()
	t.Logf("node clerk_interop.mjs:\n%s", out)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("the SDK script did not finish within 2 minutes")
	}
	if err != nil {
		t.Fatalf("the SDK script failed (%v); server log:\n%s", err, logs)
	}
	if !regexp.MustCompile(`clerk interop: \d+ checks passed`).Match(out) {
		t.Fatalf("the SDK script exited 0 without reporting its checks")
	}

	// authenticateRequest and apiKeys.verify went through the one verifier.
	if n := apiVerifications(t, reg); n < 5 {
		t.Errorf("keygate_verifications_total{source=\"api\"} = %v, want at least 5", n)
	}
	// The SDK saw secrets; the server's log must not.
	if s := regexp.MustCompile(`ak_[A-Za-z0-9_]{40,}`).FindString(logs.String()); s != "" || strings.Contains(logs.String(), token) {
		t.Errorf("the server log carries a secret or the admin token:\n%s", logs)
	}
}

// apiVerifications is keygate_verifications_total{source="api"} of reg,
// summed over the results.
func apiVerifications(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return testkit.MetricValue(t, reg, "keygate_verifications_total", map[string]string{"source": "api"})
}
