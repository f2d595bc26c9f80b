package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/keygate/keygate/keygateotel"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
)

// Tracing is on when the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: spans go out by OTLP, over
// HTTP (protobuf) unless OTEL_EXPORTER_OTLP_PROTOCOL (or the _TRACES_
// one) says grpc. The exporters read the other standard variables
// themselves (headers, TLS, timeout), and the resource reads
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.

// startTracing returns the tracer provider of command ("serve",
// "sidecar"), or nil when tracing is off, and a function that flushes
// and stops it.
func startTracing(getenv func(string) string, command string, logger *slog.Logger) (*sdktrace.TracerProvider, func(), error) {
	endpoint := firstEnv(getenv, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	if endpoint == "" {
		return nil, func() {}, nil
	}
	ctx := context.Background()
	var exp sdktrace.SpanExporter
	var err error
	switch proto := firstEnv(getenv, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"); proto {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, nil, usagef("OTEL_EXPORTER_OTLP_PROTOCOL %q: keygate sends grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, nil, usagef("OTEL_EXPORTER_OTLP_ENDPOINT: %v", err)
	}
	tp := newTracerProvider(sdktrace.WithBatcher(exp), "keygate-"+command)
	logger.Info("tracing: spans go out by OTLP", "endpoint", redactURL(endpoint, ""))
	return tp, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			logger.Warn("tracing: flushing spans at shutdown", "err", err)
		}
	}, nil
}

// newTracerProvider is keygate's provider: service.name is service unless
// OTEL_SERVICE_NAME says otherwise, and root spans are all sampled but
// client spans, which are Redis commands outside any request (heartbeats,
// acknowledgements, flushes): each would be a trace of its own.
func newTracerProvider(spans sdktrace.TracerProviderOption, service string) *sdktrace.TracerProvider {
	res, err := resource.New(context.Background(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", service), attribute.String("service.version", version)),
		resource.WithFromEnv(),
	)
	if err != nil {
		res = resource.Default()
	}
	return sdktrace.NewTracerProvider(spans, sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(noOrphanClients{})))
}

// noOrphanClients samples a root span unless it is a client span.
type noOrphanClients struct{}

func (noOrphanClients) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.Kind == trace.SpanKindClient {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
}

func (noOrphanClients) Description() string {
	return "keygate: every root span but orphan client spans"
}

func firstEnv(getenv func(string) string, names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(getenv(n)); v != "" {
			return v
		}
	}
	return ""
}

// instrumentRedis traces rdb's commands when tracing is on, without their
// arguments (db.statement): they hold digests and key IDs.
func instrumentRedis(rdb redis.UniversalClient, tp *sdktrace.TracerProvider, logger *slog.Logger) {
	if tp == nil {
		return
	}
	if err := redisotel.InstrumentTracing(rdb, redisotel.WithTracerProvider(tp),
		redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false)); err != nil {
		logger.Warn("tracing: Redis commands are not traced", "err", err)
	}
}

// verifierTracer is the verifier's tracer, or nil (no tracing at all)
// when tp is nil.
func verifierTracer(tp *sdktrace.TracerProvider) keystore.Tracer {
	if tp == nil {
		return nil
	}
	return keygateotel.Verifications(tp)
}

// traced is h with a server span per request named by name, or h itself
// when tracing is off.
func traced(tp *sdktrace.TracerProvider, name func(*http.Request) string, h http.Handler) http.Handler {
	if tp == nil {
		return h
	}
	return keygateotel.Handler(tp, name, h)
}

// grpcTracing is the gRPC server option that makes a server span of every
// call, a child of the trace context Envoy sends (traceparent in the
// call's metadata), or none when tracing is off.
func grpcTracing(tp *sdktrace.TracerProvider) []grpc.ServerOption {
	if tp == nil {
		return nil
	}
	tracer := tp.Tracer(keygateotel.ScopeName)
	return []grpc.ServerOption{grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		ctx = propagation.TraceContext{}.Extract(ctx, metadataCarrier(md))
		ctx, span := tracer.Start(ctx, strings.TrimPrefix(info.FullMethod, "/"), trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		return handler(ctx, req)
	})}
}

// metadataCarrier reads W3C trace context from gRPC metadata.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if vs := metadata.MD(c).Get(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// spanName is a fixed span name, as "METHOD name".
func spanName(name string) func(*http.Request) string {
	return func(r *http.Request) string { return r.Method + " " + name }
}

// upstreamTransport is the sidecar's transport to the upstream: with a
// client span per request and the trace context in its traceparent when
// tracing is on; nil (the default) when it is off.
func upstreamTransport(tp *sdktrace.TracerProvider) http.RoundTripper {
	if tp == nil {
		return nil
	}
	return keygateotel.Transport(tp, sidecar.NewTransport())
}
