// Package keygateotel traces keygate with OpenTelemetry: a span per
// verification, per HTTP request served (admin calls, forward-auth, the
// sidecar's proxied requests) and per request the sidecar sends upstream,
// with the W3C trace context (traceparent) passed on. It uses
// OpenTelemetry's API only; the program that links it picks the SDK and
// the exporter, as `keygate serve` and `keygate sidecar` do when
// OTEL_EXPORTER_OTLP_ENDPOINT is set. A program that does not import it
// compiles no OpenTelemetry at all, and keygate without a tracer pays a
// nil check per verification.
//
//	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
//	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{
//		Tracer: keygateotel.Verifications(tp),
//	})
//	redisotel.InstrumentTracing(rdb, redisotel.WithTracerProvider(tp)) // the Redis commands
//	proxy, err := sidecar.NewProxy(verifier, sidecar.ProxyOptions{
//		Upstream:  upstream,
//		Transport: keygateotel.Transport(tp, sidecar.NewTransport()),
//	})
//	handler := keygateotel.Handler(tp, keygateotel.MethodName, proxy)
//
// Spans never carry a secret, a request's query or body, or a header
// value: verification spans hold the entry point, the outcome, whether
// the cache answered and the key's ID; HTTP spans the method, the route
// name their caller gives, and the status.
package keygateotel

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/keygate/keygate/keystore"
)

// ScopeName is the instrumentation scope of keygate's spans.
const ScopeName = "github.com/keygate/keygate/keygateotel"

// VerifySpanName is the name of verification spans.
const VerifySpanName = "keygate.verify"

// The attributes of verification spans.
const (
	AttrSource  = attribute.Key("keygate.source")  // middleware, sidecar, forward_auth or api
	AttrOutcome = attribute.Key("keygate.outcome") // as keystore.Outcome names it
	AttrCache   = attribute.Key("keygate.cache")   // hit or miss; absent when no key was looked up
	AttrKeyID   = attribute.Key("keygate.key_id")  // the key the secret names, when there is one
)

// propagator reads and writes W3C trace context: traceparent, tracestate.
var propagator = propagation.TraceContext{}

// Verifications returns a [keystore.Tracer] that makes a span
// ([VerifySpanName]) of every verification, whose context the
// verification's Redis commands run under. A store outage sets the
// span's status to Error; a refused key is an outcome, not an error.
func Verifications(tp trace.TracerProvider) keystore.Tracer {
	return verifications{tracer: tp.Tracer(ScopeName)}
}

type verifications struct{ tracer trace.Tracer }

func (v verifications) StartVerification(ctx context.Context, source keystore.Source) (context.Context, func(string, bool, string)) {
	ctx, span := v.tracer.Start(ctx, VerifySpanName, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrSource.String(string(source))))
	return ctx, func(outcome string, hit bool, keyID string) {
		attrs := make([]attribute.KeyValue, 0, 3)
		attrs = append(attrs, AttrOutcome.String(outcome))
		if outcome != "missing" && outcome != "malformed" { // those never look a key up
			cache := "miss"
			if hit {
				cache = "hit"
			}
			attrs = append(attrs, AttrCache.String(cache))
		}
		if keyID != "" {
			attrs = append(attrs, AttrKeyID.String(keyID))
		}
		span.SetAttributes(attrs...)
		if outcome == "unavailable" {
			span.SetStatus(codes.Error, "key store unavailable")
		}
		span.End()
	}
}

// MethodName names a span by the request's method alone ("GET"), as
// OpenTelemetry's HTTP conventions do when there is no route template.
func MethodName(r *http.Request) string { return r.Method }

// Handler returns h with a server span around every request, a child of
// the trace context the request carries (traceparent), named by name,
// which must give a name of bounded cardinality (a route template, never
// a path with IDs in it). A 5xx sets the span's status to Error.
func Handler(tp trace.TracerProvider, name func(*http.Request) string, h http.Handler) http.Handler {
	tracer := tp.Tracer(ScopeName)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		route := name(r)
		ctx, span := tracer.Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", route),
		))
		defer span.End()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(ctx))
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(status))
		}
	})
}

// statusWriter keeps the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController flush and hijack through it.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Transport returns rt with a client span around every request it sends,
// and that span's W3C trace context in the request's traceparent (and
// tracestate) header, replacing any the request had: the upstream's own
// spans join the trace.
func Transport(tp trace.TracerProvider, rt http.RoundTripper) http.RoundTripper {
	return &transport{tracer: tp.Tracer(ScopeName), rt: rt}
}

type transport struct {
	tracer trace.Tracer
	rt     http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, span := t.tracer.Start(req.Context(), req.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("http.request.method", req.Method),
		attribute.String("server.address", req.URL.Hostname()),
	))
	defer span.End()
	req = req.Clone(ctx) // a RoundTripper must not change the request it is given
	req.Header.Del("Tracestate")
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		span.SetStatus(codes.Error, "round trip failed")
		return nil, err
	}
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(resp.StatusCode))
	}
	return resp, nil
}
