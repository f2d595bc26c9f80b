package middleware

import (
	"net/http"
	"net/netip"
	"slices"

	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware/internal/keyctx"
)

// Options configure the middleware of [New]. The zero value works: every
// request needs a valid key, found by [DefaultKeyLookup], and no scope.
type Options struct {
	// KeyLookup says where requests carry their key. Default
	// [DefaultKeyLookup]: a Bearer token, then X-API-Key. A query parameter
	// is read only when listed here:
	// MustParseKeyLookup("header:Authorization:Bearer ,query:api_key").
	KeyLookup KeyLookup

	// Scopes are required of every key; [RequireScopes] adds more per
	// route. Default none.
	Scopes []string

	// Optional lets a request that carries no key through, without an
	// identity, and without counting it in the metrics. A request that
	// carries a key is still verified, and refused if the key is bad; an
	// unreachable store is still 503. Default false.
	Optional bool

	// ErrorHandler answers a refused request; the chain stops there. err is
	// the outcome of [keystore.Verifier.Verify] (match it with errors.Is:
	// keystore.ErrMissing, keystore.ErrRevoked, keystore.ErrUnavailable, …;
	// [Status] and [Challenge] give the documented status and header). It
	// also answers the refusals of [RequireScopes] behind this middleware.
	// Default [WriteError].
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

	// Skipper lets the requests for which it returns true through untouched:
	// no key is read and no identity is set. Default: none is skipped.
	Skipper func(r *http.Request) bool

	// Cost returns what a request spends of a metered key's rate limits
	// and credits (docs/usage.md), per route: for a ServeMux behind the
	// middleware, look the route up with mux.Handler(r). Default: 1 for
	// every request.
	Cost func(r *http.Request) int64

	// TrustedProxies are the direct peers whose X-Forwarded-For names the
	// client, for keys with allowed CIDRs: the client address is the
	// direct peer (r.RemoteAddr), or, from a trusted peer, the address
	// X-Forwarded-For gives when read from the right past the trusted
	// proxies. From any other peer the header is ignored. Default none.
	TrustedProxies []netip.Prefix
}

func (o Options) withDefaults() Options {
	if o.KeyLookup == nil {
		o.KeyLookup = MustParseKeyLookup(DefaultKeyLookup)
	}
	o.Scopes = slices.Clone(o.Scopes)
	if o.ErrorHandler == nil {
		o.ErrorHandler = WriteError
	}
	if o.Skipper == nil {
		o.Skipper = func(*http.Request) bool { return false }
	}
	return o
}

// New returns net/http middleware that verifies every request's key with v,
// under the source label [keystore.SourceMiddleware], and answers as
// docs/verification.md says:
//
//   - a valid key holding opts.Scopes: the next handler runs, and
//     [FromContext] returns the key;
//   - no key, or a malformed, unknown, revoked or expired one: 401 with
//     WWW-Authenticate (error="invalid_token" unless the key is missing);
//   - a disabled key: 401, as a revoked one;
//   - a valid key used from a client address outside its allowed CIDRs
//     (see [Options.TrustedProxies]): 403, code api_key_ip_not_allowed;
//   - a valid key lacking one of opts.Scopes: 403 with
//     error="insufficient_scope" and the required scopes;
//   - a valid key over one of its rate limits, or out of credits: 429 with
//     Retry-After (when there is a time to retry at);
//   - the store unreachable: 503 with Retry-After. The request never goes
//     through, whatever the options.
//
// For a key with rate limits every answer carries the RateLimit-Policy and
// RateLimit header fields ([SetLimitHeaders]).
//
// New panics if v is nil.
func New(v *keystore.Verifier, opts Options) func(http.Handler) http.Handler {
	if v == nil {
		panic("middleware: New needs a verifier")
	}
	opts = opts.withDefaults()
	proxies := throttle.Proxies(slices.Clone(opts.TrustedProxies))
	anonymous := &keyctx.State{OnError: opts.ErrorHandler, Verifier: v} // shared: it never changes
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if opts.Skipper(r) {
				next.ServeHTTP(w, r)
				return
			}
			ctx := r.Context()
			secret := opts.KeyLookup.Key(r)
			if secret == "" && opts.Optional {
				next.ServeHTTP(w, r.WithContext(keyctx.With(ctx, anonymous)))
				return
			}
			req := keystore.Request{Secret: secret, Source: keystore.SourceMiddleware, Scopes: opts.Scopes, ClientIP: proxies.ClientIP(r)}
			if opts.Cost != nil {
				req.Cost = opts.Cost(r)
			}
			res, err := v.Check(ctx, req)
			SetLimitHeaders(w.Header(), res.Limits)
			if err != nil {
				opts.ErrorHandler(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(keyctx.With(ctx, &keyctx.State{Key: res.Key, OnError: opts.ErrorHandler, Verifier: v})))
		})
	}
}

// RequireScopes returns middleware that lets a request through only if the
// key that [New] (or [NewContext]) put in its context holds every one of
// scopes: use it per route, behind New. Otherwise it answers 403 with
// WWW-Authenticate error="insufficient_scope" and scope="<scopes>", or 401
// when there is no key at all (an anonymous request in Optional mode).
// Refusals are answered by the ErrorHandler of the New in front of it, else
// by [WriteError]. With no scopes it requires only a key.
//
// The check is made on the key already verified for this request: no
// Redis round trip, and no new count in keygate_verifications_total.
func RequireScopes(scopes ...string) func(http.Handler) http.Handler {
	scopes = slices.Clone(scopes)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := keyctx.From(r.Context())
			err := keyctx.CheckScopes(st, scopes)
			if err == nil {
				next.ServeHTTP(w, r)
				return
			}
			onError := WriteError
			if st != nil && st.OnError != nil {
				onError = st.OnError
			}
			onError(w, r, err)
		})
	}
}
