package main

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/keygate/keygate/internal/apierror"
)

// withRequestID gives every request its one ID before h sees it: the same
// in the X-Request-Id response header, in an error's clerk_trace_id and in
// every log line about the request.
func withRequestID(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, apierror.WithRequestID(w, r))
	})
}

// accessLog logs one debug line per request: method, path, status,
// duration and request ID. Never the query string or a header: either may
// carry a key.
func accessLog(h http.Handler, logger *slog.Logger, name string) http.Handler {
	if !logger.Enabled(context.Background(), slog.LevelDebug) {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		logger.Debug(name+" request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"duration", time.Since(start), "request_id", apierror.RequestID(r))
	})
}

// statusWriter remembers the status a handler wrote. It keeps Flush
// working, which server-sent events through the sidecar need.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
