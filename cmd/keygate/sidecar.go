package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"

	"github.com/keygate/keygate/keygateotel"
	"github.com/keygate/keygate/sidecar"
)

const sidecarSynopsis = `keygate sidecar --upstream http://127.0.0.1:3000 [flags]

A reverse proxy in front of any service: it verifies every request's key
against Redis (no hop through serve), removes the credential, sets the
X-Api-Key-* identity headers and forwards. /metrics, /healthz and /readyz are
on the separate --ops-listen address, so no upstream path is shadowed.
It needs Redis (--redis-url or --redis-addrs): the embedded store belongs to
one serve process. With OTEL_EXPORTER_OTLP_ENDPOINT set, spans of proxied
requests, verifications and Redis commands go out by OTLP, and the
upstream gets the trace in traceparent.`

func sidecarCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("keygate sidecar", sidecarSynopsis, stderr)
	var cfg storeConfig
	cfg.register(fs)
	listen := fs.String("listen", ":8081", "address the proxy listens on")
	opsListen := fs.String("ops-listen", "127.0.0.1:9091", "address of /metrics, /healthz and /readyz")
	upstream := fs.String("upstream", "", "URL of the service to protect (required)")
	keyLookup := fs.String("key-lookup", "", `where requests carry the key, e.g. "header:Authorization:Bearer ,header:X-API-Key" (the default) or add ",query:api_key"`)
	var public, requireScopes, cost listFlag
	fs.Var(&public, "public", "path prefix passed through without a key (repeatable; ';' between values in the environment)")
	fs.Var(&requireScopes, "require-scopes", `scopes a route needs: 'METHOD /prefix=scope1,scope2' (repeatable; ';' between values in the environment)`)
	fs.Var(&cost, "cost", `what a route spends of a metered key's rate limits and credits: 'METHOD /prefix=N' (repeatable; default 1)`)
	var thr throttleConfig
	thr.register(fs, false)
	if code, ok := parseFlags(fs, args, getenv, &cfg, stderr); !ok {
		return code
	}
	throttleOpts, err := thr.options()
	if err != nil {
		return startError(stderr, "keygate sidecar", err)
	}
	if *upstream == "" {
		fmt.Fprintln(stderr, "keygate sidecar: --upstream (KEYGATE_UPSTREAM) is required, e.g. http://127.0.0.1:3000")
		return exitUsage
	}
	up, err := url.Parse(*upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		fmt.Fprintf(stderr, "keygate sidecar: --upstream %q must be an http:// or https:// URL\n", *upstream)
		return exitUsage
	}
	logger := cfg.logger(stderr)
	tp, stopTracing, err := startTracing(getenv, "sidecar", logger)
	if err != nil {
		return startError(stderr, "keygate sidecar", err)
	}
	defer stopTracing()
	cfg.tracing = tp
	b, err := cfg.open(logger, false)
	if err != nil {
		return startError(stderr, "keygate sidecar", err)
	}
	defer b.Close()
	if err := b.ping(context.Background()); err != nil {
		logger.Error("Redis does not answer; requests get 503 until it does", "err", err)
	}

	proxy, err := sidecar.NewProxy(b.verifier, sidecar.ProxyOptions{
		Upstream:       up,
		KeyLookup:      *keyLookup,
		Public:         public,
		RequireScopes:  requireScopes,
		Cost:           cost,
		Logger:         logger,
		Registerer:     b.registry,
		Throttle:       throttleOpts,
		TrustedProxies: throttleOpts.TrustedProxies,
		Transport:      upstreamTransport(tp),
	})
	if err != nil {
		fmt.Fprintf(stderr, "keygate sidecar: %v\n", err)
		return exitUsage
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "keygate sidecar: --listen %s: %v\n", *listen, err)
		return exitUsage
	}
	opsLn, err := net.Listen("tcp", *opsListen)
	if err != nil {
		ln.Close()
		fmt.Fprintf(stderr, "keygate sidecar: --ops-listen %s: %v\n", *opsListen, err)
		return exitUsage
	}
	proxySrv := withLog(sidecar.NewProxyServer(*listen, withRequestID(accessLog(traced(tp, keygateotel.MethodName, proxy), logger, "sidecar"))), logger)
	opsSrv := withLog(sidecar.NewServer(*opsListen, sidecar.NewOps(b.verifier, b.registry)), logger)
	logger.Info("keygate sidecar listening", "addr", ln.Addr().String(), "ops", opsLn.Addr().String(), "upstream", up.Redacted())
	return runServers(logger, b, server{proxySrv, ln}, server{opsSrv, opsLn})
}
