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
	"strings"
	"syscall"
	"time"

	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/sidecar"
)

const serveSynopsis = `keygate serve [flags]

Serves the admin API (/api_keys and /v1/api_keys, Clerk-compatible),
POST /api_keys/verify, /forward-auth for nginx, Traefik, Caddy and Envoy,
/metrics, /healthz and /readyz on one listener. With no Redis configured it
runs on the embedded store in --data-dir, for one instance.`

// adminTokenFile holds the generated admin token in the data dir.
const adminTokenFile = "admin-token"

func serve(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("keygate serve", serveSynopsis, stderr)
	var cfg storeConfig
	cfg.register(fs)
	listen := fs.String("listen", ":8080", "address to serve on")
	adminTokens := fs.String("admin-tokens", "", "comma-separated admin bearer tokens (embedded store: generated and saved in --data-dir when unset)")
	var thr throttleConfig
	thr.register(fs, true)
	if code, ok := parseFlags(fs, args, getenv, &cfg, stderr); !ok {
		return code
	}
	throttleOpts, err := thr.options()
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	logger := cfg.logger(stderr)

	tokens := splitList(*adminTokens)
	embedded := cfg.redisURL == "" && cfg.redisAddrs == ""
	if len(tokens) == 0 && !embedded {
		fmt.Fprintln(stderr, "keygate serve: --admin-tokens (KEYGATE_ADMIN_TOKENS) is required with Redis")
		return exitUsage
	}
	b, err := cfg.open(logger, true)
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	defer b.Close()
	if len(tokens) == 0 {
		tok, created, err := loadOrCreateAdminToken(cfg.dataDir)
		if err != nil {
			fmt.Fprintf(stderr, "keygate serve: --data-dir %s: %v\n", cfg.dataDir, err)
			return exitUsage
		}
		if created {
			fmt.Fprintf(stdout, "Generated an admin token, saved in %s (shown this once):\n\n    %s\n\n",
				filepath.Join(cfg.dataDir, adminTokenFile), tok)
		} else {
			logger.Info("admin token loaded", "file", filepath.Join(cfg.dataDir, adminTokenFile))
		}
		tokens = []string{tok}
	}
	if err := b.ping(context.Background()); err != nil {
		logger.Error("Redis does not answer; /readyz reports 503 and verifications fail closed until it does", "err", err)
	}
	migrating, stopMigrating := context.WithCancel(context.Background())
	defer stopMigrating()
	migrateInBackground(migrating, b, logger, 5*time.Second)

	admin, err := adminapi.New(adminapi.Options{
		Store:       b.store,
		Verifier:    b.verifier,
		AdminTokens: tokens,
		Logger:      logger,
		Registerer:  b.registry,
	})
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	forwardAuth, err := sidecar.NewForwardAuth(b.verifier, sidecar.ForwardAuthOptions{Logger: logger, Throttle: throttleOpts})
	if err != nil {
		return startError(stderr, "keygate serve", err)
	}
	ops := sidecar.NewOps(b.verifier, b.registry)

	mux := http.NewServeMux()
	for _, p := range []string{"/api_keys", "/api_keys/", "/v1/api_keys", "/v1/api_keys/"} {
		mux.Handle(p, admin)
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
	srv := withLog(sidecar.NewServer(*listen, mux), logger)
	logger.Info("keygate serve listening", "addr", ln.Addr().String(), "version", version)
	return runServers(logger, b, server{srv, ln})
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
	srv *http.Server
	ln  net.Listener
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
