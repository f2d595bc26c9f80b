package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
)

// collector is an OTLP/HTTP trace receiver: it keeps every span it is
// sent, and every raw request body.
type collector struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracev1.Span
	raw   bytes.Buffer
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			t.Errorf("collector: %s %s, %d bytes that are no ExportTraceServiceRequest", r.Method, r.URL.Path, len(body))
			http.Error(w, "bad request", 400)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.raw.Write(body)
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				c.spans = append(c.spans, ss.GetSpans()...)
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	t.Cleanup(c.Close)
	return c
}

func spanAttr(s *tracev1.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestServeTracing runs serve on a real redis-server with
// OTEL_EXPORTER_OTLP_ENDPOINT set to a collector of the test's own, and
// checks what reaches it by OTLP once serve has stopped: a span per admin
// call, the forward-auth request continuing the caller's trace with the
// verification (cache hit or miss) and its Redis commands under it, the
// gRPC check continuing Envoy's trace, and no secret anywhere.
func TestServeTracing(t *testing.T) {
	rs := redistest.Start(t)
	c := newCollector(t)
	addr, grpcAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	base := "http://" + addr
	const token = "admintok-of-thirty-two-characters-0"
	env := []string{"KEYGATE_REDIS_URL=redis://" + rs.Addr, "KEYGATE_ADMIN_TOKENS=" + token, "KEYGATE_ADMIN_TOKEN=" + token, "KEYGATE_URL=" + base,
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + c.URL, "OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=keygate-test"}
	serve := start(t, env, base+"/readyz", "serve", "--listen", addr, "--grpc-listen", grpcAddr)
	key := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "traced", "--subject", "user_9", "--json"))

	const trace1, trace2 = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
	for i := 0; i < 2; i++ { // a miss, then a hit
		req, _ := http.NewRequest("GET", base+"/forward-auth", nil)
		req.Header.Set("Authorization", "Bearer "+key.Secret)
		req.Header.Set("Traceparent", "00-"+trace1+"-00f067aa0ba902b7-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("forward-auth: %d", resp.StatusCode)
		}
	}
	conn, err := grpc.NewClient("passthrough:///"+grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+trace2+"-b7ad6b7169203331-01")
	if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/x", Headers: map[string]string{"authorization": "Bearer " + key.Secret}}},
	}}); err != nil {
		t.Fatal(err)
	}
	if code := serve.stop(t); code != 0 { // flushes the spans
		t.Fatalf("serve exited %d:\n%s", code, serve.stderr)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	byID := map[string]*tracev1.Span{}
	for _, s := range c.spans {
		byID[hex.EncodeToString(s.GetSpanId())] = s
	}
	var names []string
	caches := map[string]int{}
	redisUnderVerify := 0
	for _, s := range c.spans {
		names = append(names, s.GetName())
		trace := hex.EncodeToString(s.GetTraceId())
		switch s.GetName() {
		case "POST /api_keys":
			if s.GetKind() != tracev1.Span_SPAN_KIND_SERVER {
				t.Errorf("admin span of kind %v", s.GetKind())
			}
		case "GET /forward-auth":
			if trace != trace1 {
				t.Errorf("the forward-auth span is in trace %s, not the caller's", trace)
			}
		case "envoy.service.auth.v3.Authorization/Check":
			if trace != trace2 {
				t.Errorf("the gRPC span is in trace %s, not Envoy's", trace)
			}
		case "keygate.verify":
			caches[spanAttr(s, "keygate.source")+" "+spanAttr(s, "keygate.cache")]++
			if parent := byID[hex.EncodeToString(s.GetParentSpanId())]; parent == nil {
				t.Errorf("verification span without its request's span (trace %s)", trace)
			}
		}
		if parent := byID[hex.EncodeToString(s.GetParentSpanId())]; parent != nil && parent.GetName() == "keygate.verify" &&
			s.GetKind() == tracev1.Span_SPAN_KIND_CLIENT {
			redisUnderVerify++
		}
	}
	for _, want := range []string{"POST /api_keys", "GET /forward-auth", "keygate.verify", "envoy.service.auth.v3.Authorization/Check"} {
		if !strings.Contains(strings.Join(names, "\n"), want) {
			t.Errorf("no %q span among %q", want, names)
		}
	}
	// Forward-auth's miss and hit, then the gRPC check's hit (forward-auth
	// too, as the metrics count it).
	if len(caches) != 2 || caches["forward_auth miss"] != 1 || caches["forward_auth hit"] != 2 {
		t.Errorf("verification spans by source and cache: %v; want 1 miss, then 2 hits", caches)
	}
	if redisUnderVerify == 0 {
		t.Error("no Redis command span under a verification span")
	}
	if bytes.Contains(c.raw.Bytes(), []byte(key.Secret)) || bytes.Contains(c.raw.Bytes(), []byte(key.Secret[len(key.Secret)-49:])) ||
		bytes.Contains(c.raw.Bytes(), []byte(token)) {
		t.Error("the exported spans hold a secret or the admin token")
	}
	if !bytes.Contains(c.raw.Bytes(), []byte("keygate-test")) {
		t.Error("OTEL_SERVICE_NAME is not the spans' service.name")
	}
}

// TestSidecarTracing runs the sidecar with OTEL_EXPORTER_OTLP_ENDPOINT
// set: the upstream gets a traceparent in the caller's trace, whose parent
// is the sidecar's client span, and the spans reach the collector.
func TestSidecarTracing(t *testing.T) {
	rs := redistest.Start(t)
	c := newCollector(t)
	var mu sync.Mutex
	var got string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Get("Traceparent")
		mu.Unlock()
	}))
	defer upstream.Close()
	addr, proxyAddr, opsAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	const token = "admintok-of-thirty-two-characters-0"
	env := []string{"KEYGATE_REDIS_URL=redis://" + rs.Addr, "KEYGATE_ADMIN_TOKENS=" + token, "KEYGATE_ADMIN_TOKEN=" + token, "KEYGATE_URL=http://" + addr}
	start(t, env, "http://"+addr+"/readyz", "serve", "--listen", addr)
	key := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "traced", "--subject", "user_9", "--json"))
	side := start(t, append(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+c.URL, "OTEL_BSP_SCHEDULE_DELAY=100"), "http://"+opsAddr+"/readyz",
		"sidecar", "--upstream", upstream.URL, "--listen", proxyAddr, "--ops-listen", opsAddr)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("GET", "http://"+proxyAddr+"/orders/1", nil)
	req.Header.Set("Authorization", "Bearer "+key.Secret)
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("through the sidecar: %d", resp.StatusCode)
	}
	if code := side.stop(t); code != 0 {
		t.Fatalf("sidecar exited %d", code)
	}
	mu.Lock()
	defer mu.Unlock()
	parts := strings.Split(got, "-")
	if len(parts) != 4 || parts[1] != traceID || parts[2] == "00f067aa0ba902b7" {
		t.Fatalf("the upstream got traceparent %q: want the caller's trace, with the sidecar's span as parent", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := map[string]bool{}
	for _, s := range c.spans {
		if hex.EncodeToString(s.GetSpanId()) == parts[2] && s.GetKind() == tracev1.Span_SPAN_KIND_CLIENT {
			kinds["upstream"] = true
		}
		kinds[s.GetName()] = true
	}
	if !kinds["upstream"] || !kinds["GET"] || !kinds["keygate.verify"] {
		t.Errorf("spans %v: want the proxied request (GET), its verification and the upstream request whose span is the traceparent's parent", kinds)
	}
	if bytes.Contains(c.raw.Bytes(), []byte(key.Secret)) {
		t.Error("the exported spans hold the secret")
	}
}
