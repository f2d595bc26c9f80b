package middleware_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/echomw"
	"github.com/labstack/echo/v4"
)

// spoofed are identity headers a client might send to pass as someone else.
var spoofed = []string{
	"X-Api-Key-Id", "ak_00000000000000000000000000000000",
	"X-Api-Key-Subject", "user_admin",
	"X-Api-Key-Scopes", "reports:read reports:write",
}

func bearer(key string) []string { return []string{"Authorization", "Bearer {" + key + "}"} }

// TestOutcomes sends every outcome of docs/verification.md through both
// middlewares, on miniredis and on a real redis-server.
func TestOutcomes(t *testing.T) {
	optional := config{optional: true}
	tests := []struct {
		name string
		cfg  config
		req  request
		want response
	}{
		{"valid bearer", config{}, request{header: bearer("reader")},
			response{status: 200, subject: "user_reader"}},
		{"lowercase bearer", config{}, request{header: []string{"Authorization", "bearer {reader}"}},
			response{status: 200, subject: "user_reader"}},
		{"uppercase bearer", config{}, request{header: []string{"Authorization", "BEARER {reader}"}},
			response{status: 200, subject: "user_reader"}},
		{"bearer with extra spaces", config{}, request{header: []string{"Authorization", "Bearer   {reader} "}},
			response{status: 200, subject: "user_reader"}},
		{"X-API-Key", config{}, request{header: []string{"X-API-Key", "{admin}"}},
			response{status: 200, subject: "user_admin"}},
		{"missing", config{}, request{},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"empty bearer", config{}, request{header: []string{"Authorization", "Bearer "}},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"other scheme is no key", config{}, request{header: []string{"Authorization", "Basic {reader}"}},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"malformed", config{}, request{header: bearer("malformed")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_invalid"}},
		{"random string", config{}, request{header: []string{"Authorization", "Bearer hunter2"}},
			response{status: 401, challenge: invalidChallenge, code: "api_key_invalid"}},
		{"unknown", config{}, request{header: bearer("unknown")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_not_found"}},
		{"revoked", config{}, request{header: bearer("revoked")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_revoked"}},
		{"expired", config{}, request{header: bearer("expired")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_expired"}},
		{"revoked X-API-Key", config{}, request{header: []string{"X-API-Key", "{revoked}"}},
			response{status: 401, challenge: invalidChallenge, code: "api_key_revoked"}},

		{"middleware scope held", config{scopes: []string{"reports:write"}}, request{header: bearer("admin")},
			response{status: 200, subject: "user_admin"}},
		{"middleware scope lacking", config{scopes: []string{"reports:write"}}, request{header: bearer("reader")},
			response{status: 403, challenge: scopeChallenge("reports:write"), code: "insufficient_scope"}},
		{"middleware scopes lacking one of two", config{scopes: []string{"reports:read", "reports:write"}}, request{header: bearer("reader")},
			response{status: 403, challenge: scopeChallenge("reports:read reports:write"), code: "insufficient_scope"}},
		{"route scope held", config{route: []string{"reports:write"}}, request{header: bearer("admin")},
			response{status: 200, subject: "user_admin"}},
		{"route scope lacking", config{route: []string{"reports:write"}}, request{header: bearer("reader")},
			response{status: 403, challenge: scopeChallenge("reports:write"), code: "insufficient_scope"}},
		{"route scope, bad key refused first", config{route: []string{"reports:write"}}, request{header: bearer("revoked")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_revoked"}},

		{"optional without key", optional, request{},
			response{status: 200, subject: "anonymous"}},
		{"optional with valid key", optional, request{header: bearer("reader")},
			response{status: 200, subject: "user_reader"}},
		{"optional with revoked key", optional, request{header: bearer("revoked")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_revoked"}},
		{"optional with malformed key", optional, request{header: []string{"X-API-Key", "{malformed}"}},
			response{status: 401, challenge: invalidChallenge, code: "api_key_invalid"}},
		{"optional, route scope without key", config{optional: true, route: []string{"reports:read"}}, request{},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"optional, route requiring only a key", config{optional: true, route: []string{}}, request{},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"optional, route scope lacking", config{optional: true, route: []string{"reports:write"}}, request{header: bearer("reader")},
			response{status: 403, challenge: scopeChallenge("reports:write"), code: "insufficient_scope"}},

		{"spoofed identity without key", config{}, request{header: spoofed},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"spoofed identity in optional mode", optional, request{header: spoofed},
			response{status: 200, subject: "anonymous"}},
		{"spoofed identity beside a valid key", config{}, request{header: append(spoofed, bearer("reader")...)},
			response{status: 200, subject: "user_reader"}},
		{"spoofed scopes on a scoped route", config{route: []string{"reports:write"}}, request{header: append(spoofed, bearer("reader")...)},
			response{status: 403, challenge: scopeChallenge("reports:write"), code: "insufficient_scope"}},
		{"key in a JSON body", config{}, request{method: "POST", body: `{"secret":"{reader}","api_key":"{reader}"}`, contentType: "application/json"},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"key in a form body, query lookup", config{lookup: "query:api_key"}, request{method: "POST", body: "api_key={reader}", contentType: "application/x-www-form-urlencoded"},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"query key not configured", config{}, request{target: "/reports?api_key={reader}"},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"query key configured", config{lookup: middleware.DefaultKeyLookup + ",query:api_key"}, request{target: "/reports?api_key={reader}"},
			response{status: 200, subject: "user_reader"}},
		{"query key configured, revoked", config{lookup: "query:api_key"}, request{target: "/reports?api_key={revoked}"},
			response{status: 401, challenge: invalidChallenge, code: "api_key_revoked"}},
		{"X-API-Key not configured", config{lookup: "header:Authorization"}, request{header: []string{"X-API-Key", "{reader}"}},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"first key present decides", config{}, request{header: append(bearer("revoked"), "X-API-Key", "{reader}")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_revoked"}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := newEnv(t, b)
			for _, s := range stacks {
				t.Run(s.name, func(t *testing.T) {
					for _, tc := range tests {
						t.Run(tc.name, func(t *testing.T) {
							rec := serve(s.build(e.v, tc.cfg), tc.req.build(e))
							tc.want.check(t, s.name, rec)
						})
					}
				})
			}
		})
	}
}

// TestStoreUnreachable checks that both middlewares fail closed: 503 with
// Retry-After, never 401 and never through, whatever the options; only
// what is decided without the store (no key, a malformed key) is still
// answered.
func TestStoreUnreachable(t *testing.T) {
	unavailable := response{status: 503, code: "store_unavailable"}
	tests := []struct {
		name string
		cfg  config
		req  request
		want response
	}{
		{"bearer", config{}, request{header: bearer("fresh")}, unavailable},
		{"X-API-Key", config{}, request{header: []string{"X-API-Key", "{fresh}"}}, unavailable},
		{"optional with key", config{optional: true}, request{header: bearer("fresh")}, unavailable},
		{"route scopes", config{route: []string{"reports:read"}}, request{header: bearer("fresh")}, unavailable},
		{"optional without key", config{optional: true}, request{},
			response{status: 200, subject: "anonymous"}},
		{"missing", config{}, request{},
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}},
		{"malformed", config{}, request{header: bearer("malformed")},
			response{status: 401, challenge: invalidChallenge, code: "api_key_invalid"}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, s := range stacks {
				t.Run(s.name, func(t *testing.T) {
					e := newEnv(t, b)
					e.down()
					for _, tc := range tests {
						t.Run(tc.name, func(t *testing.T) {
							rec := serve(s.build(e.v, tc.cfg), tc.req.build(e))
							tc.want.check(t, s.name, rec)
						})
					}
				})
			}
		})
	}
}

// TestSkipper checks that a skipped request goes through untouched, without
// a key and without an identity, and that the others do not.
func TestSkipper(t *testing.T) {
	e := newEnv(t, mini)
	skip := func(path string) bool { return path == "/healthz" }
	handlers := map[string]http.Handler{
		"net/http": middleware.New(e.v, middleware.Options{Skipper: func(r *http.Request) bool { return skip(r.URL.Path) }})(http.HandlerFunc(whoami)),
		"echo": func() http.Handler {
			ec := echo.New()
			ec.Use(echomw.New(e.v, echomw.Config{Skipper: func(c echo.Context) bool { return skip(c.Request().URL.Path) }}))
			ec.Any("/*", echoWhoami)
			return ec
		}(),
	}
	tests := []struct {
		name string
		req  request
		want response
	}{
		{"skipped without key", request{target: "/healthz"}, response{status: 200, subject: "anonymous"}},
		{"skipped with key gets no identity", request{target: "/healthz", header: bearer("reader")}, response{status: 200, subject: "anonymous"}},
		{"skipped with revoked key", request{target: "/healthz", header: bearer("revoked")}, response{status: 200, subject: "anonymous"}},
		{"not skipped", request{target: "/reports"}, response{status: 401, challenge: missingChallenge}},
		{"not skipped with key", request{target: "/reports", header: bearer("reader")}, response{status: 200, subject: "user_reader"}},
	}
	for _, s := range stacks {
		t.Run(s.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					tc.want.check(t, s.name, serve(handlers[s.name], tc.req.build(e)))
				})
			}
		})
	}
}

// TestRequireScopesAlone checks that a scope check without the auth
// middleware in front fails closed instead of letting requests through.
func TestRequireScopesAlone(t *testing.T) {
	e := newEnv(t, mini)
	ec := echo.New()
	ec.GET("/reports", echoWhoami, echomw.RequireScopes("reports:read"))
	handlers := map[string]http.Handler{
		"net/http": middleware.RequireScopes("reports:read")(http.HandlerFunc(whoami)),
		"echo":     ec,
	}
	for _, s := range stacks {
		t.Run(s.name, func(t *testing.T) {
			r := request{header: append(spoofed, bearer("admin")...)}.build(e)
			response{status: 401, challenge: missingChallenge, code: "authentication_invalid"}.check(t, s.name, serve(handlers[s.name], r))
		})
	}
}

// TestMetrics checks that the middlewares count under source="middleware",
// that a route's scope refusal counts as insufficient_scope (on top of the
// valid verification before it), and that an anonymous request in Optional
// mode is not counted.
func TestMetrics(t *testing.T) {
	for _, s := range stacks {
		t.Run(s.name, func(t *testing.T) {
			e := newEnv(t, mini)
			required := s.build(e.v, config{scopes: []string{"reports:write"}})
			optional := s.build(e.v, config{optional: true})
			route := s.build(e.v, config{route: []string{"reports:write"}})
			serve(required, request{header: bearer("admin")}.build(e))
			serve(route, request{header: bearer("reader")}.build(e)) // valid, then refused by the route
			serve(required, request{header: bearer("reader")}.build(e))
			serve(required, request{header: bearer("revoked")}.build(e))
			serve(required, request{}.build(e))
			serve(optional, request{}.build(e))
			got := e.middlewareVerifications(t)
			want := map[string]float64{"valid": 2, "insufficient_scope": 2, "revoked": 1, "missing": 1}
			for result, n := range want {
				if got[result] != n {
					t.Errorf("keygate_verifications_total{result=%q,source=\"middleware\"} = %v, want %v", result, got[result], n)
				}
			}
			for result, n := range got {
				if n != 0 && want[result] == 0 {
					t.Errorf("keygate_verifications_total{result=%q,source=\"middleware\"} = %v, want 0", result, n)
				}
			}
		})
	}
}

// TestErrorHandler checks that a custom net/http ErrorHandler answers every
// refusal, the route scope checks' too, with the outcome as an error.
func TestErrorHandler(t *testing.T) {
	tests := []struct {
		name string
		req  request
		down bool
		want error
	}{
		{"missing", request{}, false, keystore.ErrMissing},
		{"malformed", request{header: bearer("malformed")}, false, keystore.ErrMalformed},
		{"revoked", request{header: bearer("revoked")}, false, keystore.ErrRevoked},
		{"expired", request{header: bearer("expired")}, false, keystore.ErrExpired},
		{"route scope", request{header: bearer("reader")}, false, keystore.ErrInsufficientScope},
		{"store unreachable", request{header: bearer("fresh")}, true, keystore.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, mini)
			if tc.down {
				e.down()
			}
			var got error
			h := middleware.New(e.v, middleware.Options{ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				got = err
				w.WriteHeader(http.StatusTeapot)
			}})(middleware.RequireScopes("reports:write")(http.HandlerFunc(whoami)))
			rec := serve(h, tc.req.build(e))
			if rec.Code != http.StatusTeapot || !errors.Is(got, tc.want) {
				t.Errorf("status %d, error %v; want 418 from the custom handler with %v", rec.Code, got, tc.want)
			}
		})
	}
}

// TestEchoHTTPError checks that the Echo middleware returns its refusals as
// *echo.HTTPError, with the headers set and nothing written.
func TestEchoHTTPError(t *testing.T) {
	tests := []struct {
		name      string
		cfg       echomw.Config
		req       request
		down      bool
		status    int
		challenge string
		want      error
	}{
		{"missing is 401, not 400", echomw.Config{}, request{}, false, 401, missingChallenge, keystore.ErrMissing},
		{"revoked", echomw.Config{}, request{header: bearer("revoked")}, false, 401, invalidChallenge, keystore.ErrRevoked},
		{"scope", echomw.Config{Scopes: []string{"reports:write"}}, request{header: bearer("reader")}, false, 403, scopeChallenge("reports:write"), keystore.ErrInsufficientScope},
		{"store unreachable", echomw.Config{}, request{header: bearer("fresh")}, true, 503, "", keystore.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, mini)
			if tc.down {
				e.down()
			}
			ec := echo.New()
			rec := httptest.NewRecorder()
			c := ec.NewContext(tc.req.build(e), rec)
			err := echomw.New(e.v, tc.cfg)(func(echo.Context) error {
				t.Error("the handler ran")
				return nil
			})(c)
			var he *echo.HTTPError
			if !errors.As(err, &he) {
				t.Fatalf("returned %T %v, want *echo.HTTPError", err, err)
			}
			if he.Code != tc.status || !errors.Is(he.Internal, tc.want) {
				t.Errorf("HTTPError{Code: %d, Internal: %v}, want %d and %v", he.Code, he.Internal, tc.status, tc.want)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			if got := rec.Header().Get("Retry-After"); (got != "") != (tc.status == 503) {
				t.Errorf("Retry-After %q on a %d", got, tc.status)
			}
			if rec.Body.Len() != 0 || c.Response().Committed {
				t.Errorf("the middleware wrote the response itself: %q", rec.Body.String())
			}
		})
	}
}

// TestEchoErrorHandler checks Echo's ErrorHandler and
// ContinueOnIgnoredError conventions, and that an unreachable store is
// never continued.
func TestEchoErrorHandler(t *testing.T) {
	ignore := func(error, echo.Context) error { return nil }
	teapot := func(err error, c echo.Context) error {
		return echo.NewHTTPError(http.StatusTeapot, keystore.Outcome(err))
	}
	documentedBody := func(err error, c echo.Context) error {
		middleware.WriteError(c.Response(), c.Request(), err)
		return nil
	}
	tests := []struct {
		name   string
		cfg    echomw.Config
		req    request
		down   bool
		status int
		ran    bool   // the handler ran
		body   string // a substring of the body
	}{
		{"custom error", echomw.Config{ErrorHandler: teapot}, request{header: bearer("revoked")}, false, 418, false, `"revoked"`},
		{"custom error on missing", echomw.Config{ErrorHandler: teapot}, request{}, false, 418, false, `"missing"`},
		{"custom error on unreachable store", echomw.Config{ErrorHandler: teapot}, request{header: bearer("fresh")}, true, 418, false, `"unavailable"`},
		{"documented body", echomw.Config{ErrorHandler: documentedBody}, request{header: bearer("expired")}, false, 401, false, `"code":"api_key_expired"`},
		{"ignored without continue", echomw.Config{ErrorHandler: ignore}, request{header: bearer("revoked")}, false, 200, false, ""},
		{"ignored and continued, missing", echomw.Config{ErrorHandler: ignore, ContinueOnIgnoredError: true}, request{}, false, 200, true, "anonymous"},
		{"ignored and continued, revoked", echomw.Config{ErrorHandler: ignore, ContinueOnIgnoredError: true}, request{header: bearer("revoked")}, false, 200, true, "anonymous"},
		{"ignored unreachable store is not continued", echomw.Config{ErrorHandler: ignore, ContinueOnIgnoredError: true}, request{header: bearer("fresh")}, true, 200, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, mini)
			if tc.down {
				e.down()
			}
			ran := false
			ec := echo.New()
			ec.Use(echomw.New(e.v, tc.cfg))
			ec.Any("/*", func(c echo.Context) error {
				ran = true
				return echoWhoami(c)
			})
			rec := serve(ec, tc.req.build(e))
			if rec.Code != tc.status || ran != tc.ran || !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("status %d, handler ran %v, body %q; want %d, %v, containing %q",
					rec.Code, ran, rec.Body.String(), tc.status, tc.ran, tc.body)
			}
		})
	}
}
