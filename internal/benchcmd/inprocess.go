package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"unsafe"

	"github.com/labstack/echo/v4"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/echomw"
)

// benchPair runs the benchmarks base and kg, taking turns, runs times each,
// and returns their ns/op and allocs/op per run.
func benchPair(runs int, base, kg func(b *testing.B)) (baseNs, kgNs, baseAllocs, kgAllocs []float64) {
	for i := 0; i < runs; i++ {
		rb := testing.Benchmark(base)
		rk := testing.Benchmark(kg)
		baseNs = append(baseNs, nsPerOp(rb))
		kgNs = append(kgNs, nsPerOp(rk))
		baseAllocs = append(baseAllocs, float64(rb.AllocsPerOp()))
		kgAllocs = append(kgAllocs, float64(rk.AllocsPerOp()))
	}
	return
}

func nsPerOp(r testing.BenchmarkResult) float64 {
	if r.N == 0 {
		return 0
	}
	return float64(r.T.Nanoseconds()) / float64(r.N)
}

// cachedVerify compares Verifier.Verify of a cached key with what a
// home-grown check does at best: a SHA-256 of the secret, a map lookup by
// key ID and a constant-time comparison of the digests.
func cachedVerify(ctx context.Context, e *env) ([]row, error) {
	in, k, err := e.keyed(ctx, keystore.VerifierOptions{})
	if err != nil {
		return nil, err
	}
	defer in.close()
	if _, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
		return nil, err
	}

	// The baseline holds the same digest under the same ID.
	digests := map[string][sha256.Size]byte{k.ID[len("ak_"):]: sha256.Sum256([]byte(k.Secret))}
	var failed error
	base := func(b *testing.B) {
		for b.Loop() {
			if !baselineCheck(digests, k.Secret) {
				failed = errors.New("the baseline refused the key")
			}
		}
	}
	kg := func(b *testing.B) {
		for b.Loop() {
			if _, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
				failed = err
			}
		}
	}
	baseNs, kgNs, _, kgAllocs := benchPair(e.cfg.runs, base, kg)
	if failed != nil {
		return nil, failed
	}
	ratio := median(ratios(kgNs, baseNs))
	allocs := median(kgAllocs)
	return []row{{
		measure:  "cached verify, in process",
		keygate:  fmt.Sprintf("%.0f ns/op, %.0f allocs/op", median(kgNs), allocs),
		baseline: fmt.Sprintf("%.0f ns/op (map + SHA-256 + ConstantTimeCompare)", median(baseNs)),
		compare:  fmt.Sprintf("%.2f×", ratio),
		goal:     "≤ 3×, ≤ 2 allocs",
		verdict:  verdict(ratio <= 3 && allocs <= 2),
		note: "`Verifier.Verify` of one cached key (SHA-256 digests, no scope), one goroutine, `testing.Benchmark`; " +
			"the baseline hashes the same secret with SHA-256, finds its digest in a `map` by key ID and compares with " +
			"`subtle.ConstantTimeCompare`. The ratio is the median of the runs' ratios.",
	}}, nil
}

// baselineCheck is the home-grown check: hash, look up, compare.
func baselineCheck(digests map[string][sha256.Size]byte, secret string) bool {
	if len(secret) < 35 {
		return false
	}
	got := sha256.Sum256(unsafe.Slice(unsafe.StringData(secret), len(secret)))
	want, ok := digests[secret[3:35]]
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && ok
}

// nopWriter is a ResponseWriter that costs nothing, so that the middleware
// benchmarks measure the middleware.
type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header         { return w.h }
func (w nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w nopWriter) WriteHeader(int)             {}

// serveLoop is a benchmark of h serving r.
func serveLoop(h http.Handler, r *http.Request) func(b *testing.B) {
	return func(b *testing.B) {
		w := nopWriter{h: http.Header{}}
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	}
}

// middlewareSetup is a verifier with one cached key, and a request
// carrying it.
func middlewareSetup(ctx context.Context, e *env) (*instance, *http.Request, error) {
	in, k, err := e.keyed(ctx, keystore.VerifierOptions{})
	if err != nil {
		return nil, nil, err
	}
	r := httptest.NewRequest("GET", "/reports/42", nil)
	r.Header.Set("Authorization", "Bearer "+k.Secret)
	return in, r, nil
}

// httpMiddleware compares the net/http middleware in front of a handler
// with the bare handler.
func httpMiddleware(ctx context.Context, e *env) ([]row, error) {
	in, r, err := middlewareSetup(ctx, e)
	if err != nil {
		return nil, err
	}
	defer in.close()
	seen := 0
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := middleware.FromContext(r.Context()); ok {
			seen++
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mw := middleware.New(in.v, middleware.Options{})(bare)
	baseNs, kgNs, _, kgAllocs := benchPair(e.cfg.runs, serveLoop(bare, r), serveLoop(mw, r))
	if seen == 0 {
		return nil, errors.New("the handler never saw a verified key")
	}
	return []row{middlewareRow("net/http middleware, per request", baseNs, kgNs, kgAllocs,
		"`middleware.New` (default options, cached key) around a handler that reads `FromContext` and answers 204, "+
			"against that handler alone; a no-op ResponseWriter; `testing.Benchmark`, one goroutine. "+
			"Added = median of the runs' differences.")}, nil
}

// echoMiddleware compares the Echo middleware with a bare Echo handler.
func echoMiddleware(ctx context.Context, e *env) ([]row, error) {
	in, r, err := middlewareSetup(ctx, e)
	if err != nil {
		return nil, err
	}
	defer in.close()
	seen := 0
	handler := func(c echo.Context) error {
		if _, ok := echomw.Key(c); ok {
			seen++
		}
		return c.NoContent(http.StatusNoContent)
	}
	server := func(mw ...echo.MiddlewareFunc) *echo.Echo {
		ec := echo.New()
		ec.Use(mw...)
		ec.GET("/reports/:id", handler)
		return ec
	}
	baseNs, kgNs, _, kgAllocs := benchPair(e.cfg.runs, serveLoop(server(), r), serveLoop(server(echomw.New(in.v, echomw.Config{})), r))
	if seen == 0 {
		return nil, errors.New("the handler never saw a verified key")
	}
	return []row{middlewareRow("Echo middleware, per request", baseNs, kgNs, kgAllocs,
		"`echomw.New` (default config, cached key) on an Echo server whose route reads `echomw.Key` and answers 204, "+
			"against the same server without it; otherwise as the net/http row.")}, nil
}

func middlewareRow(name string, baseNs, kgNs, kgAllocs []float64, note string) row {
	added := make([]float64, len(kgNs))
	for i := range added {
		added[i] = kgNs[i] - baseNs[i]
	}
	add := median(added)
	return row{
		measure:  name,
		keygate:  fmt.Sprintf("%.0f ns/op, %.0f allocs/op", median(kgNs), median(kgAllocs)),
		baseline: fmt.Sprintf("%.0f ns/op (bare handler)", median(baseNs)),
		compare:  fmt.Sprintf("+%s", dur(add/1e9)),
		goal:     "≤ 2 µs added",
		verdict:  verdict(add <= 2000),
		note:     note,
	}
}
