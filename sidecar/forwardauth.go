package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
)

// ForwardAuthPath is where [NewForwardAuth]'s handler is mounted: at this
// path and at every path under ForwardAuthPath + "/".
const ForwardAuthPath = "/forward-auth"

// ForwardAuthOptions configure [NewForwardAuth]. The zero value works.
type ForwardAuthOptions struct {
	// KeyLookup says where the original request carries its key, in the
	// syntax of [middleware.ParseKeyLookup]. Default
	// [middleware.DefaultKeyLookup]. Query parameters are read from the
	// original URI (X-Forwarded-Uri or X-Original-URI), not from the
	// forward-auth request's own query.
	KeyLookup string
	// Logger receives one debug line per decision and an error line per
	// store outage. Default slog.Default().
	Logger *slog.Logger
	// Throttle limits failed verifications per client IP. It is off unless
	// both FailuresPerMinute and TrustedProxies are set: every request
	// comes from the proxy, so only its X-Forwarded-For tells clients
	// apart.
	Throttle ThrottleOptions
	// TrustedProxies are the direct peers (the proxy asking, and any in
	// front of it) whose X-Forwarded-For names the client, for keys with
	// allowed CIDRs: without them the client address is the asking proxy's
	// own. Default: Throttle.TrustedProxies.
	TrustedProxies []netip.Prefix
}

type forwardAuth struct {
	verifier *keystore.Verifier
	lookup   middleware.KeyLookup
	query    bool // the lookup reads a query parameter
	log      *slog.Logger
	throttle *throttler // nil: off
	trusted  throttle.Proxies
}

// NewForwardAuth returns the forward-auth handler (README.md, "Forward-auth") for nginx
// auth_request, Traefik ForwardAuth, Caddy forward_auth and Envoy
// ext_authz. It answers any method on any path it is mounted at and never
// reads the request body. The key comes from the request's headers (the
// proxy copies the original request's), verified through v (source
// forward_auth) with the scopes of the query parameter "scopes" and of the
// X-Required-Scopes header, each a comma or space separated list.
//
// A valid key gets exactly 200, an empty body and the identity headers. A
// refusal gets 401 or 403 with its WWW-Authenticate challenge, and an
// unreachable store 503 with Retry-After, each with docs/api.md's short
// JSON error body. It never answers 400: nginx turns any status but 2xx,
// 401 and 403 into a 500.
//
// The original method and URI (X-Forwarded-Method and X-Forwarded-Uri from
// Traefik and Caddy, X-Original-Method and X-Original-URI from nginx, or
// the path below /forward-auth/ from Envoy) are used for logs only.
//
// Mount it on both paths:
//
//	mux.Handle(sidecar.ForwardAuthPath, fa)
//	mux.Handle(sidecar.ForwardAuthPath+"/", fa)
func NewForwardAuth(v *keystore.Verifier, opts ForwardAuthOptions) (http.Handler, error) {
	if v == nil {
		return nil, errors.New("sidecar: nil verifier")
	}
	lookup, err := middleware.ParseKeyLookup(opts.KeyLookup)
	if err != nil {
		return nil, fmt.Errorf("sidecar: key lookup: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	fa := &forwardAuth{verifier: v, lookup: lookup, query: len(lookup.QueryParams()) > 0, log: opts.Logger,
		trusted: throttle.Proxies(opts.TrustedProxies)}
	if len(fa.trusted) == 0 {
		fa.trusted = throttle.Proxies(opts.Throttle.TrustedProxies)
	}
	if len(opts.Throttle.TrustedProxies) > 0 {
		fa.throttle = newThrottler(opts.Throttle, opts.Logger)
	}
	return fa, nil
}

func (fa *forwardAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = apierror.WithRequestID(w, r)
	method, uri := originalRequest(r)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	cost, ok := requestCost(r)
	if !ok {
		fa.log.WarnContext(r.Context(), "forward-auth: bad cost: want ?cost= or X-Keygate-Cost from 1 to 1000000", "method", method, "uri", logPath(uri))
		apierror.Write(w, apierror.RequestID(r), &apierror.Error{Status: http.StatusForbidden, Code: "request_cost_invalid",
			LongMessage: "the cost asked of forward-auth (?cost= or X-Keygate-Cost) must be 1 to 1000000"})
		return
	}
	res, err := fa.verifier.Check(r.Context(), keystore.Request{
		Secret: fa.key(r, uri), Source: keystore.SourceForwardAuth, Scopes: requiredScopes(r), Cost: cost,
		ClientIP: fa.trusted.ClientIP(r)})
	middleware.SetLimitHeaders(h, res.Limits)
	key := res.Key
	path := logPath(uri) // the query may carry a key
	if err != nil {
		if errors.Is(err, keystore.ErrUnavailable) && !clientGone(r, err) {
			fa.log.ErrorContext(r.Context(), "forward-auth: key store unavailable", "method", method, "uri", path, "err", err)
		} else {
			fa.log.DebugContext(r.Context(), "forward-auth: refused", "method", method, "uri", path, "outcome", keystore.Outcome(err))
		}
		if fa.throttle.deny(w, r, err) {
			return
		}
		middleware.WriteError(w, r, err)
		return
	}
	fa.log.DebugContext(r.Context(), "forward-auth: allowed", "method", method, "uri", path, "key_id", key.ID)
	setIdentity(h, key)
	w.WriteHeader(http.StatusOK)
}

// key finds the key of the original request.
func (fa *forwardAuth) key(r *http.Request, uri string) string {
	if !fa.query {
		return fa.lookup.Key(r)
	}
	// Query parameters belong to the original URI, not to ours.
	orig := &http.Request{Header: r.Header, URL: &url.URL{}}
	if u, err := url.ParseRequestURI(uri); err == nil {
		orig.URL = u
	}
	return fa.lookup.Key(orig)
}

// requestCost returns the cost of ?cost= and X-Keygate-Cost, the higher
// of the two when both are given (under Envoy the query is the client's
// own: it may raise the cost, never lower it), 0 when neither is, and
// false when one is not a cost. It is a 403, not a 400: nginx turns a 400
// into a 500.
func requestCost(r *http.Request) (int64, bool) {
	var cost int64
	for _, v := range []string{r.URL.Query().Get("cost"), r.Header.Get("X-Keygate-Cost")} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > keystore.MaxCost {
			return 0, false
		}
		cost = max(cost, n)
	}
	return cost, true
}

// requiredScopes returns the scopes of ?scopes= and X-Required-Scopes.
func requiredScopes(r *http.Request) []string {
	var scopes []string
	add := func(list string) {
		scopes = append(scopes, strings.FieldsFunc(list, func(c rune) bool {
			return c == ',' || c == ' ' || c == '\t'
		})...)
	}
	// Parsed by hand: url.ParseQuery drops a pair it cannot unescape, which
	// would drop a required scope. An undecodable value is kept as it is; no
	// key holds such a scope, so the request is refused.
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		name, value, _ := strings.Cut(pair, "=")
		if name != "scopes" {
			continue
		}
		if v, err := url.QueryUnescape(value); err == nil {
			value = v
		}
		add(value)
	}
	for _, v := range r.Header.Values(HeaderRequiredScopes) {
		add(v)
	}
	return scopes
}

// originalRequest returns the method and URI of the request that the proxy
// asks about, as far as the proxy says.
func originalRequest(r *http.Request) (method, uri string) {
	method = firstHeader(r.Header, "X-Forwarded-Method", "X-Original-Method")
	if method == "" {
		method = r.Method
	}
	uri = firstHeader(r.Header, "X-Forwarded-Uri", "X-Original-Uri")
	if uri == "" {
		// Envoy's ext_authz appends the original path to the path prefix.
		if rest, ok := strings.CutPrefix(r.URL.Path, ForwardAuthPath+"/"); ok {
			uri = "/" + rest
			if r.URL.RawQuery != "" {
				uri += "?" + r.URL.RawQuery
			}
		}
	}
	return method, uri
}

// logPath returns uri without its query, which may carry a key: what the
// log may say of the original request.
func logPath(uri string) string {
	path, _, _ := strings.Cut(uri, "?")
	return path
}

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}
