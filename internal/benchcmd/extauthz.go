package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/keygateotel"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/sidecar/extauthz"
)

// grpcConns is how many HTTP/2 connections carry the gRPC checks: one per
// core, as Envoy opens one per worker.
const grpcConns = 2

// extAuthzLoad compares Envoy's gRPC ext_authz (Authorization/Check) with
// the HTTP /forward-auth endpoint, on the same verifier and cached key,
// under the same closed-loop load.
func extAuthzLoad(ctx context.Context, e *env) ([]row, error) {
	in, k, err := e.keyed(ctx, keystore.VerifierOptions{})
	if err != nil {
		return nil, err
	}
	defer in.close()
	fa, err := sidecar.NewForwardAuth(in.v, sidecar.ForwardAuthOptions{})
	if err != nil {
		return nil, err
	}
	var srvs servers
	defer srvs.close()
	httpAddr, err := srvs.start(sidecar.NewServer("", fa))
	if err != nil {
		return nil, err
	}
	authz, err := extauthz.New(in.v, extauthz.Options{})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer()
	authz.Register(g)
	go g.Serve(ln)
	defer g.Stop()
	var clients []authv3.AuthorizationClient
	for range grpcConns {
		conn, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		clients = append(clients, authv3.NewAuthorizationClient(conn))
	}
	// What Envoy sends for a GET with the key: the request's attributes
	// and its headers.
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "GET", Path: "/orders/1", Host: "app.example", Scheme: "http", Protocol: "HTTP/1.1",
			Headers: map[string]string{":authority": "app.example", ":method": "GET", ":path": "/orders/1", ":scheme": "http",
				"authorization": "Bearer " + k.Secret, "user-agent": "keygate-bench", "x-request-id": "bench-1",
				"x-forwarded-proto": "http", "x-forwarded-for": "127.0.0.1"},
		}},
	}}
	auth := http.Header{"Authorization": {"Bearer " + k.Secret}, "X-Request-Id": {"bench-1"}}
	fwd := newTarget("forward-auth", httpAddr, sidecar.ForwardAuthPath+"/orders/1", auth)
	b, kr, err := compareRuns("HTTP /forward-auth", func(d time.Duration) loadResult { return hammer(fwd, e.cfg.conns, d) },
		"gRPC Check", func(d time.Duration) loadResult { return grpcHammer(ctx, clients, req, e.cfg.conns, d) },
		e.cfg.runs, e.cfg.round)
	if err != nil {
		return nil, err
	}
	kRPS, bRPS, kP99, bP99, rr, pr := loadRow(b, kr)
	return []row{{
		measure:  fmt.Sprintf("gRPC ext_authz checks, %d concurrent", e.cfg.conns),
		keygate:  fmt.Sprintf("%s, p99 %s", rate(kRPS), dur(kP99)),
		baseline: fmt.Sprintf("%s, p99 %s (HTTP `/forward-auth`)", rate(bRPS), dur(bP99)),
		compare:  fmt.Sprintf("%.0f%% throughput, p99 %.2f×", rr*100, pr),
		goal:     "report",
		verdict:  "report",
		note: fmt.Sprintf("`keygate serve`'s two ways in for Envoy, on one verifier with one cached key, no proxy in front: "+
			"`envoy.service.auth.v3.Authorization/Check` (grpc-go, the CheckRequest Envoy sends for a GET with the key, "+
			"%d concurrent calls over %d HTTP/2 connections, as Envoy opens one per worker) against a GET of `/forward-auth/orders/1` "+
			"from %d keep-alive HTTP/1.1 connections of the raw load generator of the sidecar row. Closed loops in the same process, "+
			"%s per round, taking turns; medians of %d rounds. The gRPC client's own cost (protobuf, HTTP/2) shares the two cores "+
			"with the server, as the raw HTTP generator's smaller cost does.",
			e.cfg.conns, grpcConns, e.cfg.conns, e.cfg.round, e.cfg.runs),
	}}, nil
}

// grpcHammer makes Check calls for d from conns goroutines, spread over
// clients, each calling again as its answer arrives. An answer other than
// OK counts as an error.
func grpcHammer(ctx context.Context, clients []authv3.AuthorizationClient, req *authv3.CheckRequest, conns int, d time.Duration) loadResult {
	lats := make([][]time.Duration, conns)
	errs := make([]int, conns)
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c := clients[i%len(clients)]
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := c.Check(ctx, req)
				if err != nil || resp.GetOkResponse() == nil {
					errs[i]++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			lats[i] = lat
		})
	}
	wg.Wait()
	took := time.Since(start)
	var all []time.Duration
	res := loadResult{}
	for i := range lats {
		all = append(all, lats[i]...)
		res.errors += errs[i]
	}
	slices.Sort(all)
	res.rps = float64(len(all)) / took.Seconds()
	res.p50, res.p99 = percentile(all, 50), percentile(all, 99)
	return res
}

// tracingCost measures a cached verification with tracing unset (the
// default: a nil check) and on (an SDK provider that samples every span
// and records it in memory), in the same run.
func tracingCost(ctx context.Context, e *env) ([]row, error) {
	spans := &discarding{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx)
	off, k, err := e.keyed(ctx, keystore.VerifierOptions{})
	if err != nil {
		return nil, err
	}
	defer off.close()
	on, err := e.instance(ctx, keystore.Options{}, keystore.VerifierOptions{Tracer: keygateotel.Verifications(tp)}, 0)
	if err != nil {
		return nil, err
	}
	defer on.close()
	var failed error
	loop := func(v *keystore.Verifier) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				if _, err := v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
					failed = err
				}
			}
		}
	}
	for _, v := range []*keystore.Verifier{off.v, on.v} {
		v.Verify(ctx, k.Secret, keystore.SourceMiddleware) // cache it
	}
	offNs, onNs, offAllocs, onAllocs := benchPair(e.cfg.runs, loop(off.v), loop(on.v))
	if failed != nil {
		return nil, failed
	}
	if spans.ended.Load() == 0 {
		return nil, errors.New("tracing on recorded no span")
	}
	return []row{{
		measure:  "cached verify, tracing unset vs on",
		keygate:  fmt.Sprintf("unset: %.0f ns/op, %.0f allocs/op", median(offNs), median(offAllocs)),
		baseline: fmt.Sprintf("on: %.0f ns/op, %.0f allocs/op", median(onNs), median(onAllocs)),
		compare:  fmt.Sprintf("tracing on costs %.2f×", median(ratios(onNs, offNs))),
		goal:     "report",
		verdict:  "report",
		note: "`Verifier.Verify` of one cached key, as in the cached verify row, on two verifiers in the same run: one without a " +
			"tracer (`OTEL_EXPORTER_OTLP_ENDPOINT` unset: the hot path's only cost is a nil check), one with " +
			"`keygateotel.Verifications` on an OpenTelemetry SDK provider that samples every span and hands it to a processor " +
			"that drops it (no exporter's cost). Compare the unset figure with the cached verify row.",
	}}, nil
}

// discarding is a span processor that counts spans and keeps none.
type discarding struct{ ended atomic.Int64 }

func (d *discarding) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (d *discarding) OnEnd(sdktrace.ReadOnlySpan)                     { d.ended.Add(1) }
func (d *discarding) Shutdown(context.Context) error                  { return nil }
func (d *discarding) ForceFlush(context.Context) error                { return nil }
