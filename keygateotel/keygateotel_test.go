package keygateotel_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keygateotel"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/sidecar"
)

const adminToken = "kg-admin-7c1d93e0a4b2f6a8e1c05d3b97f4"

// env is a store and a verifier on miniredis, traced (unless off) into
// an in-memory recorder, Redis commands included.
type env struct {
	mr       *miniredis.Miniredis
	rdb      *redis.Client
	store    *keystore.Store
	verifier *keystore.Verifier
	tp       *sdktrace.TracerProvider
	spans    *tracetest.SpanRecorder
}

func newEnv(t *testing.T, tracing bool) *env {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	e := &env{mr: mr, rdb: rdb, spans: tracetest.NewSpanRecorder()}
	e.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	var tracer keystore.Tracer
	if tracing {
		if err := redisotel.InstrumentTracing(rdb, redisotel.WithTracerProvider(e.tp), redisotel.WithDBStatement(false)); err != nil {
			t.Fatal(err)
		}
		tracer = keygateotel.Verifications(e.tp)
	}
	quiet := slog.New(slog.DiscardHandler)
	store, v := keystoretest.New(t, rdb, keystore.Options{LastUsedFlush: -1, Logger: quiet}, keystore.VerifierOptions{Tracer: tracer, Logger: quiet})
	e.store, e.verifier = store, v
	// Wait (a bounded time) for the verifier's subscription to be live, so
	// that its cache answers: a real asynchronous event.
	testkit.WaitFor(t, "the verifier's subscription live", 10*time.Second, func() bool { return v.Ready(context.Background()) == nil })
	return e
}

// ended returns the spans ended since the last call.
func (e *env) ended() []sdktrace.ReadOnlySpan {
	spans := e.spans.Ended()
	e.spans.Reset()
	return spans
}

func named(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key string) (string, bool) {
	for _, a := range s.Attributes() {
		if string(a.Key) == key {
			return a.Value.String(), true
		}
	}
	return "", false
}

// childrenOf returns the spans whose parent is s.
func childrenOf(spans []sdktrace.ReadOnlySpan, s sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, c := range spans {
		if c.Parent().SpanID() == s.SpanContext().SpanID() {
			out = append(out, c)
		}
	}
	return out
}

// noSecret fails when any span's name, attribute or event holds the
// secret, or the random part of it.
func noSecret(t *testing.T, spans []sdktrace.ReadOnlySpan, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		text := s.Name() + " " + s.Status().Description
		for _, a := range s.Attributes() {
			text += " " + string(a.Key) + "=" + a.Value.String()
		}
		for _, ev := range s.Events() {
			text += " " + ev.Name
			for _, a := range ev.Attributes {
				text += " " + a.Value.String()
			}
		}
		for _, secret := range secrets {
			if strings.Contains(text, secret) || strings.Contains(text, secret[len(secret)-49:]) {
				t.Errorf("span %q carries a secret: %s", s.Name(), text)
			}
		}
	}
}

// TestVerificationSpans: a span per verification, with the outcome,
// whether the cache answered and the key's ID; the Redis commands of a
// cache miss are its children; a store outage is an error.
func TestVerificationSpans(t *testing.T) {
	e := newEnv(t, true)
	k := keystoretest.Create(t, e.store, keystore.CreateParams{})
	revoked := keystoretest.Create(t, e.store, keystore.CreateParams{Name: "revoked", Subject: "user_7"})
	ctx := context.Background()
	if _, err := e.store.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	e.ended()

	for _, tc := range []struct {
		name, secret, outcome, cache, keyID string
		redis                               bool // the verification reads Redis
	}{
		{"miss", k.Secret, "valid", "miss", k.ID, true},
		{"hit", k.Secret, "valid", "hit", k.ID, false},
		{"revoked", revoked.Secret, "revoked", "miss", revoked.ID, true},
		{"malformed: no lookup", "ak_nope", "malformed", "", "", false},
		{"missing", "", "missing", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.verifier.Verify(ctx, tc.secret, keystore.SourceSidecar)
			spans := e.ended()
			v := named(spans, keygateotel.VerifySpanName)
			if len(v) != 1 {
				t.Fatalf("%d verification spans, want 1 (of %d)", len(v), len(spans))
			}
			s := v[0]
			for key, want := range map[string]string{"keygate.outcome": tc.outcome, "keygate.cache": tc.cache, "keygate.key_id": tc.keyID, "keygate.source": "sidecar"} {
				if got, ok := attr(s, key); got != want || ok != (want != "") {
					t.Errorf("%s = %q (present %v), want %q", key, got, ok, want)
				}
			}
			if redisSpans := childrenOf(spans, s); (len(redisSpans) > 0) != tc.redis {
				t.Errorf("%d Redis command spans under the verification, want some: %v", len(redisSpans), tc.redis)
			} else if tc.redis && redisSpans[0].SpanKind() != trace.SpanKindClient {
				t.Errorf("child span %q is not a Redis client span", redisSpans[0].Name())
			}
			if s.Status().Code == codes.Error {
				t.Error("a refusal is not an error")
			}
			noSecret(t, spans, k.Secret, revoked.Secret)
		})
	}

	t.Run("store down: an error", func(t *testing.T) {
		fresh := keystoretest.Create(t, e.store, keystore.CreateParams{Name: "fresh", Subject: "user_8"})
		e.ended()
		e.mr.Close()
		e.verifier.Verify(ctx, fresh.Secret, keystore.SourceSidecar)
		v := named(e.ended(), keygateotel.VerifySpanName)
		if len(v) != 1 || v[0].Status().Code != codes.Error {
			t.Fatalf("verification spans %v, want one with status Error", v)
		}
		if got, _ := attr(v[0], "keygate.outcome"); got != "unavailable" {
			t.Errorf("outcome %q", got)
		}
	})
}

// TestProxySpans: through the sidecar, a server span that continues the
// client's trace, the verification under it, and a client span whose
// context the upstream gets in traceparent.
func TestProxySpans(t *testing.T) {
	e := newEnv(t, true)
	k := keystoretest.Create(t, e.store, keystore.CreateParams{})
	var got http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	proxy, err := sidecar.NewProxy(e.verifier, sidecar.ProxyOptions{Upstream: u,
		Transport: keygateotel.Transport(e.tp, sidecar.NewTransport()), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// Served in the test's goroutine, so that every span has ended when
	// it returns.
	h := keygateotel.Handler(e.tp, keygateotel.MethodName, proxy)
	e.ended()

	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req := httptest.NewRequest("GET", "/orders/1?page=2", nil)
	req.Header.Set("Authorization", "Bearer "+k.Secret)
	req.Header.Set("Traceparent", "00-"+clientTrace+"-"+clientSpan+"-01")
	req.Header.Set("Tracestate", "client=spoofed")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("through the proxy: %d %s", rec.Code, rec.Body)
	}
	spans := e.ended()

	server := onlyKind(t, spans, trace.SpanKindServer)
	if server.SpanContext().TraceID().String() != clientTrace || server.Parent().SpanID().String() != clientSpan || !server.Parent().IsRemote() {
		t.Errorf("server span %v does not continue the client's trace", server.Parent())
	}
	if code, _ := attr(server, "http.response.status_code"); code != "200" || server.Name() != "GET" {
		t.Errorf("server span %q, status %s", server.Name(), code)
	}
	clients := childrenOf(spans, server)
	var upstream sdktrace.ReadOnlySpan
	verified := false
	for _, c := range clients {
		switch {
		case c.Name() == keygateotel.VerifySpanName:
			verified = true
		case c.SpanKind() == trace.SpanKindClient:
			upstream = c
		}
	}
	if !verified || upstream == nil {
		t.Fatalf("under the server span: %d spans, want the verification and the upstream request", len(clients))
	}
	want := "00-" + clientTrace + "-" + upstream.SpanContext().SpanID().String() + "-01"
	if tp := got.Get("Traceparent"); tp != want {
		t.Errorf("the upstream got traceparent %q, want %q (the client span's)", tp, want)
	}
	if ts := got.Values("Tracestate"); len(ts) != 0 && ts[0] == "client=spoofed" && upstream.SpanContext().TraceState().Len() == 0 {
		t.Errorf("the upstream got the client's tracestate %q", ts)
	}
	noSecret(t, spans, k.Secret)
	for _, s := range spans {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.String(), "page=2") {
				t.Errorf("span %q holds the query: %s", s.Name(), a.Value.String())
			}
		}
	}
}

func onlyKind(t *testing.T, spans []sdktrace.ReadOnlySpan, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanKind() == kind {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d spans of kind %v, want 1", len(out), kind)
	}
	return out[0]
}

// TestAdminSpans: a span per admin call, named by its route (never the
// path with its ID), with its Redis commands under it; the secret that
// create answers with is in no span.
func TestAdminSpans(t *testing.T) {
	e := newEnv(t, true)
	admin, err := adminapi.New(adminapi.Options{Store: e.store, Verifier: e.verifier, AdminTokens: []string{adminToken},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h := keygateotel.Handler(e.tp, adminapi.Route, admin)
	call := func(method, path, body string) string {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Body.String()
	}
	created := call("POST", "/v1/api_keys", `{"name":"n","subject":"user_1"}`)
	id := created[strings.Index(created, `"id":"`)+6:][:35]
	secret := created[strings.Index(created, `"secret":"`)+10:]
	secret = secret[:strings.IndexByte(secret, '"')]
	call("GET", "/v1/api_keys/"+id, "")
	call("POST", "/api_keys/verify", `{"secret":"`+secret+`"}`)
	call("DELETE", "/api_keys/"+id+"/secret", "")
	spans := e.ended()

	var names []string
	for _, s := range spans {
		if s.SpanKind() == trace.SpanKindServer {
			names = append(names, s.Name())
			if len(childrenOf(spans, s)) == 0 && s.Name() != "/api_keys/{id}/secret" {
				t.Errorf("admin span %q has no child span (Redis commands, the verification)", s.Name())
			}
		}
	}
	if want := "POST /api_keys,GET /api_keys/{id},POST /api_keys/verify,/api_keys/{id}/secret"; strings.Join(names, ",") != want {
		t.Errorf("admin spans %q, want %q", names, want)
	}
	if len(named(spans, keygateotel.VerifySpanName)) != 1 {
		t.Error("POST /api_keys/verify made no verification span")
	}
	noSecret(t, spans, secret)
}

// TestNoSpansWhenOff: without a tracer, and with the handlers and the
// transport left unwrapped (as keygate leaves them when tracing is off),
// nothing records a span, even with a global tracer provider set.
// (keystore's TestTracer checks that a verification without a tracer
// allocates nothing more.)
func TestNoSpansWhenOff(t *testing.T) {
	e := newEnv(t, false)
	global := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(global)))
	defer otel.SetTracerProvider(prev)

	k := keystoretest.Create(t, e.store, keystore.CreateParams{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	proxy, err := sidecar.NewProxy(e.verifier, sidecar.ProxyOptions{Upstream: u, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("Authorization", "Bearer "+k.Secret)
	proxy.ServeHTTP(httptest.NewRecorder(), req)
	if _, err := e.verifier.Verify(context.Background(), k.Secret, keystore.SourceMiddleware); err != nil {
		t.Fatal(err)
	}
	if n := len(global.Ended()) + len(e.spans.Ended()); n != 0 {
		t.Errorf("%d spans recorded with tracing off", n)
	}
}
