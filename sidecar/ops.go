package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keygate/keygate/keystore"
)

// readyTimeout bounds one readiness check.
const readyTimeout = 2 * time.Second

// NewOps returns the handler of the sidecar's ops listener (README.md, "The sidecar"):
//
//   - /metrics: the metrics gathered by g, in the Prometheus text format;
//   - /healthz: 200 while the process serves HTTP;
//   - /readyz: 200 when v is ready ([keystore.Verifier.Ready]), else 503.
//
// Every other path is a 404.
func NewOps(v *keystore.Verifier, g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelError),
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := v.Ready(ctx); err != nil {
			slog.WarnContext(r.Context(), "sidecar: not ready", "err", err)
			w.Header().Set("Retry-After", "1")
			plain(w, http.StatusServiceUnavailable, "not ready: key store unavailable\n")
			return
		}
		plain(w, http.StatusOK, "ready\n")
	})
	return mux
}

func plain(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	io.WriteString(w, body)
}
