package middleware

import (
	"errors"
	"net/netip"
	"slices"
	"strconv"

	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
	"github.com/labstack/echo/v4"
)

// EchoConfig configures the middleware of [Echo], after Echo's
// middleware.KeyAuthConfig. The zero value works: every request needs a
// valid key, found by [DefaultKeyLookup], and no scope.
type EchoConfig struct {
	// Skipper lets the requests for which it returns true through untouched:
	// no key is read and no identity is set. Echo's middleware.DefaultSkipper
	// and friends fit. Default: none is skipped.
	Skipper func(c echo.Context) bool

	// KeyLookup says where requests carry their key, in the syntax of
	// [KeyLookup] (Echo's keyauth syntax, header and query sources only).
	// Default [DefaultKeyLookup]: a Bearer token, then X-API-Key.
	KeyLookup string

	// Scopes are required of every key; [EchoRequireScopes] adds more per
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
	// client, for keys with allowed CIDRs, as in [Options.TrustedProxies].
	// Echo's own IPExtractor is not consulted. Default none.
	TrustedProxies []netip.Prefix

	// ContinueOnIgnoredError calls the next handler, without an identity,
	// when ErrorHandler returns nil, as in Echo's keyauth. It is never
	// honoured for an unreachable store: that request does not go through.
	// Default false.
	ContinueOnIgnoredError bool
}

// Echo returns Echo middleware that verifies every request's key with v,
// under the source label [keystore.SourceMiddleware]. On success the next
// handler runs and [EchoKey] (or [FromContext] on c.Request().Context())
// returns the key. A refusal is returned as an *echo.HTTPError for Echo's
// HTTPErrorHandler to write: Code is the contract's status (401 for a
// missing, malformed, unknown, revoked or expired key — also 401, not
// keyauth's 400, when the key is missing; 403 for a missing scope; 503 for
// an unreachable store), Internal the verifier's error, and the
// WWW-Authenticate and Retry-After headers are already set on c.Response().
//
// Echo panics if v is nil or cfg.KeyLookup does not parse, as Echo's
// KeyAuthWithConfig does.
func Echo(v *keystore.Verifier, cfg EchoConfig) echo.MiddlewareFunc {
	if v == nil {
		panic("middleware: Echo needs a verifier")
	}
	lookup := MustParseKeyLookup(cfg.KeyLookup)
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
			SetLimitHeaders(c.Response().Header(), res.Limits)
			if err == nil {
				c.SetRequest(r.WithContext(withState(r.Context(), &state{key: res.Key, verifier: v})))
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

// EchoRequireScopes is [RequireScopes] for Echo: behind [Echo], it lets a
// request through only if its key holds every one of scopes, and otherwise
// returns an *echo.HTTPError as [Echo] does (403, or 401 when the request
// has no key).
func EchoRequireScopes(scopes ...string) echo.MiddlewareFunc {
	scopes = slices.Clone(scopes)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := checkScopes(stateFrom(c.Request().Context()), scopes); err != nil {
				return echoError(c, err)
			}
			return next(c)
		}
	}
}

// EchoKey returns the verified key of the request that [Echo] let through,
// and whether there is one.
func EchoKey(c echo.Context) (*keystore.APIKey, bool) {
	return FromContext(c.Request().Context())
}

// echoError sets the refusal's headers on the response and returns the
// *echo.HTTPError for Echo's error handler to write.
func echoError(c echo.Context, err error) *echo.HTTPError {
	e := Error(err)
	h := c.Response().Header()
	if ch := Challenge(err); ch != "" {
		h.Set(echo.HeaderWWWAuthenticate, ch)
	}
	if e.RetryAfter > 0 {
		h.Set(echo.HeaderRetryAfter, strconv.Itoa(e.RetryAfter))
	}
	return &echo.HTTPError{Code: e.Status, Message: e.LongMessage, Internal: err}
}
