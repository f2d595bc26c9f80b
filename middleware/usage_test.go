package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/echomw"
	"github.com/labstack/echo/v4"
)

// TestRateLimitsAndCredits: through both middlewares, a key limited to 2
// per minute passes twice, with the RateLimit header fields, then gets 429
// with Retry-After; a key out of credits gets 429 api_key_usage_exceeded;
// a route's cost is charged.
func TestRateLimitsAndCredits(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b)
			ctx := context.Background()
			limited, err := e.store.Create(ctx, keystore.CreateParams{Name: "l", Subject: "user_l",
				RateLimits: []keystore.RateLimit{{Name: "default", Limit: 2, DurationMs: 60_000}}})
			if err != nil {
				t.Fatal(err)
			}
			metered, err := e.store.Create(ctx, keystore.CreateParams{Name: "m", Subject: "user_m",
				Credits: &keystore.Credits{Remaining: 5}})
			if err != nil {
				t.Fatal(err)
			}
			cost := func(path string) int64 {
				if path == "/export" {
					return 3
				}
				return 1
			}
			handlers := map[string]http.Handler{
				"net/http": middleware.New(e.v, middleware.Options{Cost: func(r *http.Request) int64 { return cost(r.URL.Path) }})(http.HandlerFunc(whoami)),
			}
			ec := echo.New()
			ec.Use(echomw.New(e.v, echomw.Config{Cost: func(c echo.Context) int64 { return cost(c.Request().URL.Path) }}))
			ec.Any("/*", echoWhoami)
			handlers["echo"] = ec
			for name, h := range handlers {
				t.Run(name, func(t *testing.T) {
					send := func(secret, path string) *httptest.ResponseRecorder {
						r := httptest.NewRequest(http.MethodGet, path, nil)
						r.Header.Set("Authorization", "Bearer "+secret)
						return serve(h, r)
					}
					for i, wantR := range []string{`"default";r=1;t=30`, `"default";r=0;t=60`} {
						rec := send(limited.Secret, "/reports")
						if rec.Code != 200 || rec.Header().Get("RateLimit-Policy") != `"default";q=2;w=60` || rec.Header().Get("RateLimit") != wantR {
							t.Fatalf("request %d: %d, RateLimit-Policy %q, RateLimit %q (want %q)", i+1, rec.Code,
								rec.Header().Get("RateLimit-Policy"), rec.Header().Get("RateLimit"), wantR)
						}
					}
					rec := send(limited.Secret, "/reports")
					if rec.Code != 429 || rec.Header().Get("Retry-After") != "30" || rec.Header().Get("RateLimit") != `"default";r=0;t=60` {
						t.Fatalf("over the limit: %d, Retry-After %q, RateLimit %q", rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("RateLimit"))
					}
					if name == "net/http" && testkit.ErrorCode(t, rec.Body.Bytes()) != "api_key_rate_limited" {
						t.Fatalf("code %q", testkit.ErrorCode(t, rec.Body.Bytes()))
					}
					e.clock.Advance(time.Minute) // the limit is whole again

					if rec := send(metered.Secret, "/export"); rec.Code != 200 || rec.Header().Get("RateLimit") != "" {
						t.Fatalf("cost 3 of 5: %d, RateLimit %q (a key without limits has none)", rec.Code, rec.Header().Get("RateLimit"))
					}
					rec = send(metered.Secret, "/export")
					if rec.Code != 429 || rec.Header().Get("Retry-After") != "" {
						t.Fatalf("cost 3 of 2: %d, Retry-After %q (no refill: none)", rec.Code, rec.Header().Get("Retry-After"))
					}
					if name == "net/http" && testkit.ErrorCode(t, rec.Body.Bytes()) != "api_key_usage_exceeded" {
						t.Fatalf("code %q", testkit.ErrorCode(t, rec.Body.Bytes()))
					}
					for range 2 {
						if rec := send(metered.Secret, "/reports"); rec.Code != 200 {
							t.Fatalf("cost 1: %d", rec.Code)
						}
					}
					// Top up for the other stack.
					if _, err := e.store.Update(ctx, metered.ID, keystore.UpdateParams{Credits: &keystore.Credits{Remaining: 5}}); err != nil {
						t.Fatal(err)
					}
					if _, err := e.store.Update(ctx, limited.ID, keystore.UpdateParams{RateLimits: &[]keystore.RateLimit{{Name: "default", Limit: 2, DurationMs: 60_000}}}); err != nil {
						t.Fatal(err)
					}
				})
			}
		})
	}
}
