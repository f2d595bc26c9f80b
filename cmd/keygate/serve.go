package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/console"
	"github.com/keygate/keygate/sidecar"
	"github.com/keygate/keygate/sidecar/extauthz"
)

const serveSynopsis = `keygate serve [flags]

Serves the admin API (/api_keys and /v1/api_keys, Clerk-compatible; its
OpenAPI 3.1 document at /v1/openapi.json), the web console at /console,
POST /api_keys/verify, /forward-auth for nginx, Traefik, Caddy and Envoy,
/metrics, /healthz and /readyz on one listener, and with --grpc-listen
Envoy's gRPC ext_authz on another. With no Redis configured it
runs on the embedded store in --data-dir, for one instance. With
OTEL_EXPORTER_OTLP_ENDPOINT set, spans of admin calls, forward-auth,
gRPC checks, verifications and Redis commands go out by OTLP.`

// adminTokenFile holds the generated admin token in the data dir.
const adminTokenFile = "admin-token"

func serve(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("keygate serve", serveSynopsis, stderr)
	var cfg storeConfig
	cfg.register(fs)
	listen := fs.String("listen", ":8080", "address to serve on")
	grpcListen := fs.String("grpc-listen", "", "address to serve Envoy's gRPC ext_authz (envoy.service.auth.v3.Authorization) on; default: off")
	adminTokens := fs.String("admin-tokens", "", "comma-separated admin bearer tokens (embedded store: generated and saved in --data-dir when unset)")
	var thr throttleConfig
	thr.register(fs, true)
	var ac auditConfig
	ac.register(fs)
	sessionTTL := fs.Duration("console-session-ttl", console.DefaultSessionTTL, "how long a sign-in to the web console lasts")
	consoleOrigin := fs.String("console-origin", "", "the console's public origin (https://keys.example.com) when a proxy in front rewrites Host or terminates TLS; form posts from any other origin are refused")
	secureCookies := fs.Bool("console-secure-cookies", false, "mark the console's cookies Secure even on plain HTTP (behind a TLS-terminating proxy)")
	if code, ok := parseFlags(fs, args, getenv, &cfg, stderr); !ok {
		return code
	}
	named, err := ac.check()
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	if *sessionTTL < time.Minute {
		fmt.Fprintln(stderr, "keygate serve: --console-session-ttl must be at least 1m")
		return exitUsage
	}
	if *consoleOrigin != "" {
		if _, err := console.ParseOrigin(*consoleOrigin); err != nil {
			fmt.Fprintf(stderr, "keygate serve: --console-origin (KEYGATE_CONSOLE_ORIGIN): %v\n", err)
			return exitUsage
		}
	}
	throttleOpts, err := thr.options()
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	logger := cfg.logger(stderr)
	tp, stopTracing, err := startTracing(getenv, "serve", logger)
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	defer stopTracing()
	cfg.tracing = tp

	tokens := splitList(*adminTokens)
	if err := adminapi.CheckAdminTokens(tokens); err != nil {
		fmt.Fprintf(stderr, "keygate serve: --admin-tokens (KEYGATE_ADMIN_TOKENS): %v\n", err)
		return exitUsage
	}
	embedded := cfg.redisURL == "" && cfg.redisAddrs == ""
	if len(tokens) == 0 && len(named) == 0 && !embedded {
		fmt.Fprintln(stderr, "keygate serve: --admin-tokens (KEYGATE_ADMIN_TOKENS) or --admin-tokens-file is required with Redis")
		return exitUsage
	}
	tokenLoaded, generated := false, ""
	if len(tokens) == 0 && len(named) == 0 {
		tok, created, err := loadOrCreateAdminToken(cfg.dataDir)
		if err != nil {
			fmt.Fprintf(stderr, "keygate serve: --data-dir %s: %v\n", cfg.dataDir, err)
			return exitUsage
		}
		if created {
			generated = tok
		}
		tokenLoaded = !created
		tokens = []string{tok}
	}
	b, err := cfg.open(logger, true)
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	defer b.Close()
	if tokenLoaded { // after the data directory's lock: a refused start is one line
		logger.Info("admin token loaded", "file", filepath.Join(cfg.dataDir, adminTokenFile))
	}
	if err := b.ping(context.Background()); err != nil {
		logger.Error("Redis does not answer; /readyz reports 503 and verifications fail closed until it does", "err", err)
	}
	migrating, stopMigrating := context.WithCancel(context.Background())
	defer stopMigrating()
	migrateInBackground(migrating, b, logger, 5*time.Second)

	auditLog, stopWebhooks, err := ac.start(b, &cfg, logger)
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	b.stops = append(b.stops, stopWebhooks)
	adminThrottle := adminapi.ThrottleOptions{
		FailuresPerMinute: throttleOpts.FailuresPerMinute,
		Burst:             throttleOpts.Burst,
		TrustedProxies:    throttleOpts.TrustedProxies,
	}
	// One budget of failed admin tokens per address, at the admin API and
	// the console's sign-in alike.
	adminThrottle.Budget = adminapi.NewFailureBudget(adminThrottle)
	admin, err := adminapi.New(adminapi.Options{
		Store:       b.store,
		Verifier:    b.verifier,
		AdminTokens: tokens,
		Tokens:      named,
		Audit:       auditLog,
		Logger:      logger,
		Registerer:  b.registry,
		Throttle:    adminThrottle,
	})
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	forwardAuth, err := sidecar.NewForwardAuth(b.verifier, sidecar.ForwardAuthOptions{Logger: logger, Throttle: throttleOpts})
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	ops := sidecar.NewOps(b.verifier, b.registry)

	admin = traced(tp, adminapi.Route, admin)
	con, err := console.New(console.Options{
		AdminAPI:      admin,
		Tokens:        append(adminapi.BareTokens(tokens), named...),
		Redis:         b.rdb,
		Namespace:     cfg.namespace,
		SessionTTL:    *sessionTTL,
		SecureCookies: *secureCookies,
		Origin:        *consoleOrigin,
		Throttle:      adminThrottle,
		Logger:        logger,
	})
	consoleOn := err == nil
	switch {
	case errors.Is(err, console.ErrNoSignInToken):
		// Only verify tokens are configured: nobody could sign in.
		logger.Warn("web console off", "reason", err.Error())
	case err != nil:
		return startError(stderr, "keygate serve", err)
	}
	forwardAuth = traced(tp, spanName(sidecar.ForwardAuthPath), forwardAuth)
	mux := http.NewServeMux()
	for _, p := range []string{"/api_keys", "/api_keys/", "/v1/api_keys", "/v1/api_keys/", "/audit_events", "/v1/audit_events"} {
		mux.Handle(p, admin)
	}
	mux.Handle(adminapi.OpenAPIPath, adminapi.OpenAPI())
	if consoleOn {
		mux.Handle(console.Path, con)
		mux.Handle(console.Path+"/", con)
	}
	forwardAuth = accessLog(forwardAuth, logger, "forward-auth")
	mux.Handle("/forward-auth", forwardAuth)
	mux.Handle("/forward-auth/", forwardAuth)
	for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
		mux.Handle(p, ops)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "keygate serve: --listen %s: %v\n", *listen, err)
		return exitUsage
	}
	// console.WithHeaders: the mux's own answers under /console (a path-
	// cleaning redirect) carry the console's security headers too.
	srv := withLog(sidecar.NewServer(*listen, withRequestID(console.WithHeaders(mux))), logger)
	servers := []server{{srv, ln}}
	if *grpcListen != "" {
		authz, err := extauthz.New(b.verifier, extauthz.Options{Logger: logger, Throttle: throttleOpts})
		if err != nil {
			ln.Close()
			return startError(stderr, "keygate serve", err)
		}
		gln, err := net.Listen("tcp", *grpcListen)
		if err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "keygate serve: --grpc-listen %s: %v\n", *grpcListen, err)
			return exitUsage
		}
		servers = append(servers, server{newGRPCServer(authz, grpcTracing(tp)...), gln})
		logger.Info("keygate serve: gRPC ext_authz listening", "addr", gln.Addr().String())
	}
	logger.Info("keygate serve listening", "addr", ln.Addr().String(), "version", version)
	if consoleOn {
		printConsole(stdout, ln.Addr(), generated, cfg.dataDir, tokenLoaded)
	}
	return runServers(logger, b, servers...)
}

// parseFlags parses and checks the flags; ok is false when the command
// must stop, with code its exit status.
func parseFlags(fs *flagSet, args []string, getenv func(string) string, cfg *storeConfig, stderr io.Writer) (code int, ok bool) {
	if err := fs.parse(args, getenv); err != nil {
		if errors.Is(err, errHelp) {
			return exitOK, false
		}
		fmt.Fprintln(stderr, err)
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.name, fs.Arg(0))
		return exitUsage, false
	}
	if cfg != nil {
		if err := cfg.check(); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
			return exitUsage, false
		}
	}
	return 0, true
}

func startError(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", cmd, err)
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitUnreachable
}

// withLog sends the server's own errors (TLS handshakes, panics) to logger.
func withLog(srv *http.Server, logger *slog.Logger) *http.Server {
	srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	return srv
}

type server struct {
	srv interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
	}
	ln net.Listener
}

// runServers serves until SIGTERM or SIGINT, then drains in-flight requests,
// closes the backend (flushing last-used times) and returns 0.
func runServers(logger *slog.Logger, b *backend, servers ...server) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.srv.Serve(s.ln) }()
	}
	code := exitOK
	select {
	case <-ctx.Done():
		logger.Info("shutting down: draining requests")
	case err := <-errc:
		logger.Error("server stopped", "err", err)
		code = exitUnreachable
	}
	drain, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.srv.Shutdown(drain); err != nil {
			logger.Warn("draining", "err", err)
		}
	}
	b.Close()
	logger.Info("stopped")
	return code
}

// loadOrCreateAdminToken reads the admin token saved in dir, or generates
// one and saves it with mode 0600.
func loadOrCreateAdminToken(dir string) (token string, created bool, err error) {
	path := filepath.Join(dir, adminTokenFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			if err := adminapi.CheckAdminTokens([]string{tok}); err != nil {
				return "", false, fmt.Errorf("%s: %w; delete the file to generate a new one", adminTokenFile, err)
			}
			return tok, false, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, err
	}
	token = "kga_" + hex.EncodeToString(raw[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, err
	}
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return token, true, nil
}

// printConsole tells the operator where the console is and what to sign
// in with: the admin token generated just now (shown this once, as
// before), or the file that holds the one generated on an earlier start.
func printConsole(stdout io.Writer, addr net.Addr, generated, dataDir string, loaded bool) {
	host := "localhost"
	port := ""
	if ta, ok := addr.(*net.TCPAddr); ok {
		port = strconv.Itoa(ta.Port)
		if !ta.IP.IsUnspecified() {
			host = ta.IP.String()
		}
	}
	url := "http://" + net.JoinHostPort(host, port) + console.Path
	switch {
	case generated != "":
		fmt.Fprintf(stdout, "Generated an admin token, saved in %s (shown this once):\n\n    %s\n\n"+
			"Web console: %s (sign in with the admin token above)\n\n",
			filepath.Join(dataDir, adminTokenFile), generated, url)
	case loaded:
		fmt.Fprintf(stdout, "Web console: %s (sign in with the admin token in %s)\n\n",
			url, filepath.Join(dataDir, adminTokenFile))
	default:
		fmt.Fprintf(stdout, "Web console: %s (sign in with one of the admin tokens)\n\n", url)
	}
}
