package sidecar

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
)

func TestOps(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	up, _ := url.Parse("http://" + testkit.FreeAddr(t))
	proxy, err := NewProxy(e.verifier, ProxyOptions{Upstream: up, Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	proxy.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)) // one 401
	ops := httptest.NewServer(NewOps(e.verifier, e.reg))
	defer ops.Close()
	c := ops.Client()

	get := func(path string) (int, string) {
		status, _, body := testkit.Do(t, c, "GET", ops.URL+path, nil, nil)
		return status, string(body)
	}
	if status, body := get("/healthz"); status != 200 {
		t.Errorf("/healthz: %d %s", status, body)
	}
	// Ready once the verifier's invalidation subscription is live, which
	// takes a round trip after start.
	for i := 0; ; i++ {
		status, body := get("/readyz")
		if status == 200 {
			break
		}
		if i == 200 {
			t.Fatalf("/readyz with the store up: %d %s", status, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	status, body := get("/metrics")
	if status != 200 {
		t.Fatalf("/metrics: %d", status)
	}
	for _, want := range []string{
		`keygate_proxy_requests_total{code="401"} 1`,
		`keygate_verifications_total{result="missing",source="sidecar"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if status, _ := get("/"); status != http.StatusNotFound {
		t.Errorf("/: %d, want 404 (the ops listener serves no upstream path)", status)
	}

	mr.Close()
	if status, body := get("/readyz"); status != 503 {
		t.Errorf("/readyz with the store down: %d %s, want 503", status, body)
	}
	if status, body := get("/healthz"); status != 200 {
		t.Errorf("/healthz with the store down: %d %s, want 200 (the process is up)", status, body)
	}
}
