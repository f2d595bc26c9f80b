package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Timeouts of the servers and the upstream transport that this package
// builds.
const (
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request line and headers (slowloris), on every server.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout bounds how long a keep-alive connection waits for its
	// next request, on every server.
	IdleTimeout = 120 * time.Second
	// RequestTimeout is the ReadTimeout and WriteTimeout of the servers of
	// short exchanges ([NewServer]): whole request read, whole response
	// written.
	RequestTimeout = 30 * time.Second
	// DialTimeout, TLSHandshakeTimeout and ResponseHeaderTimeout bound the
	// upstream's connect, its TLS handshake, and the wait for its response
	// header once the request (body included) is sent; the body that
	// follows has no deadline, so streams last as long as they need.
	DialTimeout           = 5 * time.Second
	TLSHandshakeTimeout   = 5 * time.Second
	ResponseHeaderTimeout = 60 * time.Second
	// MaxHeaderBytes bounds the request line and headers a client may
	// send, on every server (431 beyond it); net/http's default is 1 MiB.
	MaxHeaderBytes = 64 << 10
	// DefaultDrain is how long [Serve] lets in-flight requests finish at
	// shutdown when not told otherwise.
	DefaultDrain = 25 * time.Second
)

// NewProxyServer returns the server for the proxy listener. It has
// [ReadHeaderTimeout], [IdleTimeout] and [MaxHeaderBytes] but no
// ReadTimeout and no WriteTimeout: either would cut a slow upload or a
// server-sent event stream in the middle. A verified client that stops
// sending a body it started holds its request until the client or the
// upstream gives up; the upstream request is cancelled as soon as the
// client hangs up. A refused request's connection is closed without
// reading its body, so an unverified client cannot hold one.
func NewProxyServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
}

// NewServer returns a server for short exchanges: the ops listener, the
// forward-auth endpoint, an admin API. Besides [ReadHeaderTimeout],
// [IdleTimeout] and [MaxHeaderBytes] it bounds reading a whole request and
// writing a whole response by [RequestTimeout].
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       RequestTimeout,
		WriteTimeout:      RequestTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
}

// NewTransport returns the transport to the upstream: [DialTimeout],
// [TLSHandshakeTimeout], [ResponseHeaderTimeout], up to 256 idle
// keep-alive connections to the upstream, and no proxy from the
// environment (the upstream is next door).
func NewTransport() *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   TLSHandshakeTimeout,
		ResponseHeaderTimeout: ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// Serve serves srv on ln until ctx is done, then shuts it down gracefully:
// it stops accepting connections, lets in-flight requests finish for at
// most drain ([DefaultDrain] when not positive), and then closes the
// connections still open, such as server-sent event streams, which
// cancels their upstream requests. It returns nil after a shutdown, or the
// error that stopped the server before ctx was done.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration) error {
	if drain <= 0 {
		drain = DefaultDrain
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		slog.Warn("sidecar: requests still running after the drain period; closing them", "addr", ln.Addr().String(), "drain", drain, "err", err)
		err = srv.Close()
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
