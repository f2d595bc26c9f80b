package middleware_test

import (
	"net/http"
	"testing"

	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/echomw"
	"github.com/labstack/echo/v4"
)

// nopWriter is a ResponseWriter that costs nothing, so that the benchmarks
// measure the middleware rather than a recorder.
type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header         { return w.h }
func (w nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w nopWriter) WriteHeader(int)             {}

// BenchmarkHTTP measures the net/http middleware, on a real redis-server,
// against the bare handler: the difference of ns/op between bare and valid
// is what the middleware adds per request (the key is verified once before
// the timer starts, so the verifier's cache, when it has one, is warm).
func BenchmarkHTTP(b *testing.B) {
	e := newEnv(b, realRedis)
	var seen int
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := middleware.FromContext(r.Context()); ok {
			seen++
		}
		w.WriteHeader(http.StatusNoContent)
	})
	run := func(b *testing.B, h http.Handler, r *http.Request) {
		w := nopWriter{h: http.Header{}}
		h.ServeHTTP(w, r)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	}
	valid := request{header: bearer("reader")}.build(e)
	b.Run("bare", func(b *testing.B) { run(b, bare, valid) })
	b.Run("valid", func(b *testing.B) { run(b, middleware.New(e.v, middleware.Options{})(bare), valid) })
	b.Run("valid+RequireScopes", func(b *testing.B) {
		run(b, middleware.New(e.v, middleware.Options{})(middleware.RequireScopes("reports:read")(bare)), valid)
	})
	b.Run("missing", func(b *testing.B) { run(b, middleware.New(e.v, middleware.Options{})(bare), request{}.build(e)) })
	b.Run("optional anonymous", func(b *testing.B) {
		run(b, middleware.New(e.v, middleware.Options{Optional: true})(bare), request{}.build(e))
	})
	if seen == 0 {
		b.Fatal("the handler never saw a key")
	}
}

// BenchmarkEcho measures the Echo middleware against a bare Echo handler,
// as BenchmarkHTTP does.
func BenchmarkEcho(b *testing.B) {
	e := newEnv(b, realRedis)
	var seen int
	handler := func(c echo.Context) error {
		if _, ok := echomw.Key(c); ok {
			seen++
		}
		return c.NoContent(http.StatusNoContent)
	}
	server := func(mw ...echo.MiddlewareFunc) *echo.Echo {
		ec := echo.New()
		ec.Use(mw...)
		ec.GET("/reports", handler)
		return ec
	}
	run := func(b *testing.B, h http.Handler, r *http.Request) {
		w := nopWriter{h: http.Header{}}
		h.ServeHTTP(w, r)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	}
	valid := request{header: bearer("reader")}.build(e)
	b.Run("bare", func(b *testing.B) { run(b, server(), valid) })
	b.Run("valid", func(b *testing.B) { run(b, server(echomw.New(e.v, echomw.Config{})), valid) })
	if seen == 0 {
		b.Fatal("the handler never saw a key")
	}
}
