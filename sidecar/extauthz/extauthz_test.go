package extauthz_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/alicebob/miniredis/v2"
	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/syncbuf"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/sidecar/extauthz"
)

// env is a store, a verifier, the gRPC server on a loopback port and a
// client connected to it, and forward-auth over the same verifier, to
// compare answers with.
type env struct {
	mr          *miniredis.Miniredis
	store       *keystore.Store
	clock       *testclock.Clock
	client      authv3.AuthorizationClient
	forwardAuth http.Handler
	logs        *syncbuf.Buffer
}

func newEnv(t *testing.T, opts extauthz.Options) *env {
	t.Helper()
	mr, rdb := redistest.Mini(t)
	e := &env{mr: mr, clock: testclock.New(), logs: &syncbuf.Buffer{}}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, v := keystoretest.New(t, rdb, keystore.Options{Now: e.clock.Now, LastUsedFlush: -1}, keystore.VerifierOptions{})
	e.store = store
	opts.Logger = logger
	srv, err := extauthz.New(v, opts)
	if err != nil {
		t.Fatal(err)
	}
	if e.forwardAuth, err = sidecar.NewForwardAuth(v, sidecar.ForwardAuthOptions{Logger: logger}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.client = authv3.NewAuthorizationClient(conn)
	return e
}

func (e *env) create(t *testing.T, p keystore.CreateParams) *keystore.APIKey {
	t.Helper()
	return keystoretest.Create(t, e.store, p)
}

// check is one original request as Envoy describes it, from client
// 203.0.113.9 through an Envoy that appended it to X-Forwarded-For.
type check struct {
	headers map[string]string // lowercase, as Envoy sends them
	scopes  string            // keygate_scopes; "" for none
	cost    string            // keygate_cost
	path    string            // default /orders/1
	source  string            // default 203.0.113.9
}

func (c check) request() *authv3.CheckRequest {
	path, source := c.path, c.source
	if path == "" {
		path = "/orders/1"
	}
	if source == "" {
		source = "203.0.113.9"
	}
	h := map[string]string{
		":authority": "app.example", ":method": "GET", ":path": path, ":scheme": "http",
		"x-request-id": "req-1", "x-forwarded-proto": "http",
	}
	for k, v := range c.headers {
		h[k] = v
	}
	if v, ok := h["x-forwarded-for"]; ok {
		h["x-forwarded-for"] = v + "," + source
	} else {
		h["x-forwarded-for"] = source
	}
	ext := map[string]string{}
	if c.scopes != "" {
		ext[extauthz.ExtensionScopes] = c.scopes
	}
	if c.cost != "" {
		ext[extauthz.ExtensionCost] = c.cost
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(source, 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress("10.0.0.2", 8000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "GET", Path: path, Host: "app.example", Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
		}},
		ContextExtensions: ext,
	}}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// forwardAuth asks the HTTP endpoint the same question.
func (c check) forwardAuth(h http.Handler) *httptest.ResponseRecorder {
	target := "/forward-auth?scopes=" + url.QueryEscape(c.scopes)
	if c.cost != "" {
		target += "&cost=" + c.cost
	}
	req := httptest.NewRequest("GET", target, nil)
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Request-Id", "req-1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func (e *env) check(t *testing.T, c check) *authv3.CheckResponse {
	t.Helper()
	resp, err := e.client.Check(context.Background(), c.request())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// answer is a response as the client or the upstream sees it, whichever
// way it was decided.
type answer struct {
	status  int
	headers map[string]string // lowercase names
	body    string
}

func grpcAnswer(t *testing.T, resp *authv3.CheckResponse) answer {
	t.Helper()
	a := answer{headers: map[string]string{}}
	switch r := resp.HttpResponse.(type) {
	case *authv3.CheckResponse_OkResponse:
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Fatalf("OK response with status %v", resp.GetStatus())
		}
		a.status = 200
		for _, h := range r.OkResponse.GetHeaders() {
			setHeader(t, a.headers, h)
		}
	case *authv3.CheckResponse_DeniedResponse:
		if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
			t.Fatal("denied response with status OK")
		}
		a.status = int(r.DeniedResponse.GetStatus().GetCode())
		a.body = r.DeniedResponse.GetBody()
		for _, h := range r.DeniedResponse.GetHeaders() {
			setHeader(t, a.headers, h)
		}
	default:
		t.Fatalf("response without an HTTP answer: %v", resp)
	}
	return a
}

func setHeader(t *testing.T, m map[string]string, h *corev3.HeaderValueOption) {
	t.Helper()
	if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
		t.Errorf("header %s: %v, want it to replace the client's", h.GetHeader().GetKey(), h.GetAppendAction())
	}
	name := h.GetHeader().GetKey()
	if name != strings.ToLower(name) {
		t.Errorf("header %q is not lowercase", name)
	}
	if _, dup := m[name]; dup {
		t.Errorf("header %s set twice", name)
	}
	m[name] = h.GetHeader().GetValue()
}

// compared are the headers both ways in must agree on.
var compared = []string{"www-authenticate", "retry-after", "ratelimit", "ratelimit-policy", "content-type", "cache-control",
	"x-api-key-id", "x-api-key-subject", "x-api-key-name", "x-api-key-scopes", "x-api-key-claims"}

func httpAnswer(rec *httptest.ResponseRecorder) answer {
	a := answer{status: rec.Code, headers: map[string]string{}, body: rec.Body.String()}
	for _, name := range compared {
		if vs := rec.Header().Values(name); len(vs) > 0 {
			a.headers[name] = strings.Join(vs, ",")
		}
	}
	return a
}

// TestCheckMatchesForwardAuth asks every outcome over a real gRPC
// connection and of the HTTP forward-auth endpoint over the same
// verifier: status, challenge, Retry-After, RateLimit headers, identity
// headers and body agree.
func TestCheckMatchesForwardAuth(t *testing.T) {
	e := newEnv(t, extauthz.Options{})
	one := int64(1)
	full := e.create(t, keystore.CreateParams{Name: "CI key", Subject: "user_full",
		Scopes: []string{"reports:read", "reports:write"}, Claims: json.RawMessage(`{ "plan": "pro", "seats": 3 }`)})
	limited := e.create(t, keystore.CreateParams{Name: "limited", Subject: "user_limited"})
	revoked := e.create(t, keystore.CreateParams{Subject: "user_revoked"})
	expired := e.create(t, keystore.CreateParams{Subject: "user_expired", SecondsUntilExpiration: &one})
	deleted := e.create(t, keystore.CreateParams{Subject: "user_deleted"})
	ctx := context.Background()
	if _, err := e.store.Revoke(ctx, revoked.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Delete(ctx, deleted.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	// Rate limits and credits: each way in gets a key of its own, so that
	// both see the same sequence.
	metered := func() *keystore.APIKey {
		return e.create(t, keystore.CreateParams{Subject: "user_metered",
			RateLimits: []keystore.RateLimit{{Name: "default", Limit: 2, DurationMs: 60_000}}})
	}
	credited := func() *keystore.APIKey {
		return e.create(t, keystore.CreateParams{Subject: "user_credits", Credits: &keystore.Credits{Remaining: 3}})
	}
	bearer := func(s string) map[string]string { return map[string]string{"authorization": "Bearer " + s} }

	type step struct {
		c      check
		status int
	}
	cases := []struct {
		name  string
		steps func() ([]step, []step) // the gRPC steps, then the HTTP steps
		// distinct: the two ways use keys of their own, whose IDs differ.
		// message: the long_message names where the cost came from.
		distinct, message bool
	}{
		{name: "valid, claims", steps: same(step{check{headers: bearer(full.Secret)}, 200})},
		{name: "valid, no claims, no scopes", steps: same(step{check{headers: bearer(limited.Secret)}, 200})},
		{name: "X-API-Key", steps: same(step{check{headers: map[string]string{"x-api-key": limited.Secret}}, 200})},
		{name: "scopes held", steps: same(step{check{headers: bearer(full.Secret), scopes: "reports:read,reports:write"}, 200})},
		{name: "scope lacking", steps: same(step{check{headers: bearer(full.Secret), scopes: "reports:read, admin"}, 403})},
		{name: "missing", steps: same(step{check{}, 401})},
		{name: "basic auth is no key", steps: same(step{check{headers: map[string]string{"authorization": "Basic dXNlcjpwYXNz"}}, 401})},
		{name: "malformed", steps: same(step{check{headers: bearer("ak_nope")}, 401})},
		{name: "unknown", steps: same(step{check{headers: bearer(deleted.Secret)}, 401})},
		{name: "revoked", steps: same(step{check{headers: bearer(revoked.Secret)}, 401})},
		{name: "expired", steps: same(step{check{headers: bearer(expired.Secret)}, 401})},
		{name: "revoked with a missing scope: revoked first", steps: same(step{check{headers: bearer(revoked.Secret), scopes: "admin"}, 401})},
		{name: "bad cost", steps: same(step{check{headers: bearer(full.Secret), cost: "0"}, 403}), message: true},
		{name: "rate limit: admitted, then 429", distinct: true, steps: func() ([]step, []step) {
			g, h := metered(), metered()
			seq := func(k *keystore.APIKey) []step {
				c := check{headers: bearer(k.Secret)}
				return []step{{c, 200}, {c, 200}, {c, 429}}
			}
			return seq(g), seq(h)
		}},
		{name: "rate limit: missing scope is refused before it is charged", distinct: true, steps: func() ([]step, []step) {
			g, h := metered(), metered()
			seq := func(k *keystore.APIKey) []step {
				return []step{{check{headers: bearer(k.Secret), scopes: "admin"}, 403}, {check{headers: bearer(k.Secret), cost: "2"}, 200}}
			}
			return seq(g), seq(h)
		}},
		{name: "credits: cost from the context extension, then out of credits", distinct: true, steps: func() ([]step, []step) {
			g, h := credited(), credited()
			seq := func(k *keystore.APIKey) []step {
				return []step{{check{headers: bearer(k.Secret), cost: "2"}, 200}, {check{headers: bearer(k.Secret), cost: "2"}, 429}}
			}
			return seq(g), seq(h)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gs, hs := tc.steps()
			for i := range gs {
				got := grpcAnswer(t, e.check(t, gs[i].c))
				want := httpAnswer(hs[i].c.forwardAuth(e.forwardAuth))
				if got.status != gs[i].status || want.status != gs[i].status {
					t.Fatalf("step %d: gRPC %d, forward-auth %d, want %d (%s)", i, got.status, want.status, gs[i].status, want.body)
				}
				if tc.distinct {
					delete(got.headers, "x-api-key-id")
					delete(want.headers, "x-api-key-id")
				}
				if tc.message {
					got.body, want.body = testkit.ErrorCode(t, []byte(got.body)), testkit.ErrorCode(t, []byte(want.body))
				}
				compare(t, got, want)
			}
		})
	}

	t.Run("redis down: 503 with Retry-After, a denial and not an error", func(t *testing.T) {
		fresh := e.create(t, keystore.CreateParams{Subject: "user_fresh"}) // never cached
		e.mr.Close()
		c := check{headers: bearer(fresh.Secret)}
		resp := e.check(t, c)
		if codes.Code(resp.GetStatus().GetCode()) != codes.Unavailable {
			t.Errorf("gRPC status %v, want UNAVAILABLE", resp.GetStatus())
		}
		got, want := grpcAnswer(t, resp), httpAnswer(c.forwardAuth(e.forwardAuth))
		if got.status != 503 || got.headers["retry-after"] != "1" {
			t.Fatalf("got %d, Retry-After %q; want 503 with Retry-After 1", got.status, got.headers["retry-after"])
		}
		compare(t, got, want)
	})

	if strings.Contains(e.logs.String(), full.Secret) {
		t.Error("a log line holds a secret")
	}
}

// same makes a case whose one step both ways in take alike.
func same[S any](s S) func() ([]S, []S) {
	return func() ([]S, []S) { return []S{s}, []S{s} }
}

func compare(t *testing.T, got, want answer) {
	t.Helper()
	for _, name := range compared {
		if strings.HasPrefix(name, "x-api-key-") && want.status == 200 {
			// forward-auth sends an empty X-Api-Key-Scopes; Envoy would drop
			// an empty header, so gRPC removes it instead.
			if want.headers[name] == "" {
				if v, ok := got.headers[name]; ok {
					t.Errorf("%s set to %q, want it absent", name, v)
				}
				continue
			}
		}
		if want.status == 200 && !strings.HasPrefix(name, "x-api-key-") {
			continue // for the proxy, not the client
		}
		if got.headers[name] != want.headers[name] {
			t.Errorf("%s: gRPC %q, forward-auth %q", name, got.headers[name], want.headers[name])
		}
	}
	if got.body != want.body {
		t.Errorf("body: gRPC %q, forward-auth %q", got.body, want.body)
	}
}

// TestCheckHeaders: a request that is let through loses its credential
// and every identity or forwarding header the client sent, in every
// spelling; gets the key's identity and keygate's forwarding headers; and
// nothing keygate sets is also removed (Envoy removes after it sets).
func TestCheckHeaders(t *testing.T) {
	e := newEnv(t, extauthz.Options{KeyLookup: "header:Authorization:Bearer ,header:X-API-Key,query:api_key"})
	k := e.create(t, keystore.CreateParams{Name: "CI key", Subject: "user_full", Scopes: []string{"reports:read"},
		RateLimits: []keystore.RateLimit{{Name: "default", Limit: 100, DurationMs: 60_000}}})
	spoofed := map[string]string{}
	for _, n := range []string{"x-api-key-id", "x-api-key-subject", "x-api-key-name", "x-api-key-scopes", "x-api-key-claims",
		"x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-uri", "forwarded", "x-real-ip",
		"true-client-ip", "x-original-url", "x-rewrite-url"} {
		spoofed[n] = "spoofed"
		spoofed[strings.ReplaceAll(n, "-", "_")] = "spoofed"
	}
	spoofed["x_forwarded_for"] = "spoofed"
	spoofed["x_api_key"] = "spoofed"
	spoofed["x-forwarded-for"] = "198.51.100.66" // the client's own claim
	spoofed["x-keep-me"] = "app header"

	for _, tc := range []struct {
		name        string
		credential  map[string]string
		path        string
		removeQuery []string
	}{
		{"bearer", map[string]string{"authorization": "Bearer " + k.Secret}, "", nil},
		{"x-api-key", map[string]string{"x-api-key": k.Secret}, "", nil},
		{"query", nil, "/orders/1?api_key=" + k.Secret + "&page=2", []string{"api_key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testkit.Merge(spoofed, tc.credential)
			resp := e.check(t, check{headers: h, path: tc.path})
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("not OK: %v", resp)
			}
			set := grpcAnswer(t, resp).headers
			removed := ok.GetHeadersToRemove()
			want := map[string]string{
				"x-api-key-id": k.ID, "x-api-key-subject": "user_full", "x-api-key-name": "CI key", "x-api-key-scopes": "reports:read",
				"x-forwarded-for": "203.0.113.9", "x-forwarded-host": "app.example", "x-forwarded-proto": "http",
			}
			if !mapsEqual(set, want) {
				t.Errorf("headers set %v, want %v", set, want)
			}
			for name := range h {
				spoof := sidecar.Spoofable(name) || name == "authorization" || name == "x-api-key" || name == "x_api_key"
				switch _, isSet := set[name]; {
				case spoof && !isSet && !slices.Contains(removed, name):
					t.Errorf("the client's %s reaches the upstream", name)
				case !spoof && slices.Contains(removed, name):
					t.Errorf("%s removed", name)
				}
			}
			for _, name := range removed {
				if _, isSet := set[name]; isSet {
					t.Errorf("%s both set and removed: Envoy would drop keygate's value", name)
				}
			}
			if !slices.Equal(ok.GetQueryParametersToRemove(), tc.removeQuery) {
				t.Errorf("query parameters removed: %q, want %q", ok.GetQueryParametersToRemove(), tc.removeQuery)
			}
			var client []string
			for _, rh := range ok.GetResponseHeadersToAdd() {
				client = append(client, rh.GetHeader().GetKey())
			}
			if !slices.Equal(client, []string{"ratelimit", "ratelimit-policy"}) {
				t.Errorf("headers for the client %q, want the RateLimit fields", client)
			}
		})
	}

	t.Run("trusted proxy: its X-Forwarded-For is believed", func(t *testing.T) {
		e := newEnv(t, extauthz.Options{Throttle: sidecar.ThrottleOptions{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}})
		k := e.create(t, keystore.CreateParams{})
		resp := e.check(t, check{source: "10.1.2.3", headers: map[string]string{"authorization": "Bearer " + k.Secret,
			"x-forwarded-for": "198.51.100.66, 203.0.113.9", "x-forwarded-proto": "https", "x-forwarded-host": "api.example"}})
		set := grpcAnswer(t, resp).headers
		if set["x-forwarded-for"] != "203.0.113.9, 10.1.2.3" || set["x-forwarded-proto"] != "https" || set["x-forwarded-host"] != "api.example" {
			t.Errorf("forwarding headers %v", set)
		}
	})

	t.Run("raw headers (encode_raw_headers)", func(t *testing.T) {
		req := check{}.request()
		hr := req.Attributes.Request.Http
		hr.Headers = nil
		hr.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":path", RawValue: []byte("/orders/1")},
			{Key: "authorization", RawValue: []byte("Bearer " + k.Secret)},
			{Key: "x-api-key-subject", RawValue: []byte("spoofed")},
		}}
		resp, err := e.client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if got := grpcAnswer(t, resp).headers["x-api-key-subject"]; got != "user_full" {
			t.Fatalf("subject %q", got)
		}
		if removed := resp.GetOkResponse().GetHeadersToRemove(); !slices.Equal(removed, []string{"authorization"}) {
			t.Errorf("removed %q", removed)
		}
	})
}

// TestCheckThrottle: failed keys from one source are throttled (429
// too_many_requests) once its budget is spent; another source, and a
// valid key from the same one, are not.
func TestCheckThrottle(t *testing.T) {
	e := newEnv(t, extauthz.Options{Throttle: sidecar.ThrottleOptions{FailuresPerMinute: 1, Burst: 2}})
	k := e.create(t, keystore.CreateParams{})
	bad := map[string]string{"authorization": "Bearer ak_guess"}
	for i, want := range []int{401, 401, 429} {
		if got := grpcAnswer(t, e.check(t, check{headers: bad})); got.status != want {
			t.Fatalf("failure %d: got %d, want %d", i+1, got.status, want)
		} else if want == 429 && !strings.Contains(got.body, `"too_many_requests"`) {
			t.Errorf("429 body %s", got.body)
		}
	}
	if got := grpcAnswer(t, e.check(t, check{headers: bad, source: "198.51.100.7"})); got.status != 401 {
		t.Errorf("another client got %d, want 401", got.status)
	}
	if got := grpcAnswer(t, e.check(t, check{headers: map[string]string{"authorization": "Bearer " + k.Secret}})); got.status != 200 {
		t.Errorf("a valid key from the throttled client got %d, want 200", got.status)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
