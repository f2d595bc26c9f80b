// Package echomw verifies API keys in front of Echo v4 handlers: it is the
// Echo form of package middleware, with the same [keystore.Verifier] behind
// it and the same answers (docs/verification.md). It lives in a package of
// its own so that a net/http user of middleware does not build Echo.
//
//	e := echo.New()
//	e.Use(echomw.New(verifier, echomw.Config{}))
//	e.GET("/reports", reports, echomw.RequireScopes("reports:read"))
//
// and in the handler, key, _ := echomw.Key(c) (or middleware.FromContext on
// c.Request().Context()). Refusals are returned as *echo.HTTPError for
// Echo's HTTPErrorHandler to write; middleware.WriteError writes the JSON
// error body of the net/http middleware instead, from an ErrorHandler.
package echomw

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"

	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/internal/keyctx"
	"github.com/labstack/echo/v4"
)

// Config configures the middleware of [New], after Echo's
// middleware.KeyAuthConfig. The zero value works: every request needs a
// valid key, found by [middleware.DefaultKeyLookup], and no scope.
type Config struct {
	// Skipper lets the requests for which it returns true through untouched:
	// no key is read and no identity is set. Echo's middleware.DefaultSkipper
	// and friends fit. Default: none is skipped.
	Skipper func(c echo.Context) bool

	// KeyLookup says where requests carry their key, in the syntax of
	// [middleware.KeyLookup] (Echo's keyauth syntax, header and query
	// sources only). Default [middleware.DefaultKeyLookup]: a Bearer token,
	// then X-API-Key.
	KeyLookup string

	// Scopes are required of every key; [RequireScopes] adds more per
	// route. Default none.
	Scopes []string

	// Optional lets a request that carries no key through, without an
	// identity, and without counting it in the metrics. A request that
	// carries a key is still verified, and refused if the key is bad; an
	// unreachable store is still refused. Default false.
	Optional bool

	// ErrorHandler, when set, decides what a refused request gets: it is
	// called with the outcome of [keystore.Verifier.Verify] (match it with
	// errors.Is: keystore.ErrMissing, keystore.ErrRevoked,
	// keystore.ErrUnavailable, …) and its result is returned instead of the
	// default *echo.HTTPError. Default none.
	ErrorHandler func(err error, c echo.Context) error

	// Cost returns what a request spends of a metered key's rate limits
	// and credits (docs/usage.md); c.Path() is the matched route. Default:
	// 1 for every request.
	Cost func(c echo.Context) int64

	// TrustedProxies are the direct peers whose X-Forwarded-For names the
	// client, for keys with allowed CIDRs, as in
	// [middleware.Options.TrustedProxies]. Echo's own IPExtractor is not
	// consulted. Default none.
	TrustedProxies []netip.Prefix

	// ContinueOnIgnoredError calls the next handler, without an identity,
	// when ErrorHandler returns nil, as in Echo's keyauth. It is never
	// honoured for an unreachable store: that request does not go through.
	// Default false.
	ContinueOnIgnoredError bool
}

// New returns Echo middleware that verifies every request's key with v,
// under the source label [keystore.SourceMiddleware]. On success the next
// handler runs and [Key] (or [middleware.FromContext] on
// c.Request().Context()) returns the key. A refusal is returned as an
// *echo.HTTPError for Echo's HTTPErrorHandler to write: Code is the
// documented status (401 for a missing, malformed, unknown, revoked or
// expired key — also 401, not keyauth's 400, when the key is missing; 403
// for a missing scope; 503 for an unreachable store), Internal the
// verifier's error, and the WWW-Authenticate and Retry-After headers are
// already set on c.Response().
//
// New panics if v is nil or cfg.KeyLookup does not parse, as Echo's
// KeyAuthWithConfig does.
func New(v *keystore.Verifier, cfg Config) echo.MiddlewareFunc {
	if v == nil {
		panic("echomw: New needs a verifier")
	}
	lookup := middleware.MustParseKeyLookup(cfg.KeyLookup)
	scopes := slices.Clone(cfg.Scopes)
	proxies := throttle.Proxies(slices.Clone(cfg.TrustedProxies))
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if cfg.Skipper != nil && cfg.Skipper(c) {
				return next(c)
			}
			r := c.Request()
			secret := lookup.Key(r)
			if secret == "" && cfg.Optional {
				return next(c)
			}
			req := keystore.Request{Secret: secret, Source: keystore.SourceMiddleware, Scopes: scopes, ClientIP: proxies.ClientIP(r)}
			if cfg.Cost != nil {
				req.Cost = cfg.Cost(c)
			}
			res, err := v.Check(r.Context(), req)
			middleware.SetLimitHeaders(c.Response().Header(), res.Limits)
			if err == nil {
				c.SetRequest(r.WithContext(keyctx.With(r.Context(), &keyctx.State{Key: res.Key, Verifier: v})))
				return next(c)
			}
			if cfg.ErrorHandler == nil {
				return echoError(c, err)
			}
			herr := cfg.ErrorHandler(err, c)
			if herr == nil && cfg.ContinueOnIgnoredError && !errors.Is(err, keystore.ErrUnavailable) {
				return next(c)
			}
			return herr
		}
	}
}

// RequireScopes is [middleware.RequireScopes] for Echo: behind [New], it lets a
// request through only if its key holds every one of scopes, and otherwise
// returns an *echo.HTTPError as [New] does (403, or 401 when the request
// has no key).
func RequireScopes(scopes ...string) echo.MiddlewareFunc {
	scopes = slices.Clone(scopes)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := keyctx.CheckScopes(keyctx.From(c.Request().Context()), scopes); err != nil {
				return echoError(c, err)
			}
			return next(c)
		}
	}
}

// Key returns the verified key of the request that [New] let through,
// and whether there is one.
func Key(c echo.Context) (*keystore.APIKey, bool) {
	return middleware.FromContext(c.Request().Context())
}

// echoError sets the refusal's headers on the response and returns the
// *echo.HTTPError for Echo's error handler to write.
func echoError(c echo.Context, err error) *echo.HTTPError {
	e := middleware.Error(err)
	h := c.Response().Header()
	if ch := middleware.Challenge(err); ch != "" {
		h.Set(echo.HeaderWWWAuthenticate, ch)
	}
	if e.RetryAfter > 0 {
		h.Set(echo.HeaderRetryAfter, strconv.Itoa(e.RetryAfter))
	}
	return &echo.HTTPError{Code: e.Status, Message: e.LongMessage, Internal: err}
}
