package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxBodyBytes is the largest request body the API reads; a larger one is
// refused with 413 request_body_too_large, before any of it is read when
// its Content-Length says so.
const MaxBodyBytes = 64 << 10

// MinAdminTokenLen is the fewest characters an admin token may have: 32
// random characters are out of reach of guessing, however many guesses
// get through the throttle.
const MinAdminTokenLen = 32

// Options configure the handler [New] returns. Store, Verifier and at least
// one admin token are required; every other field has a working zero value.
type Options struct {
	// Store holds the keys. Required.
	Store *keystore.Store
	// Verifier answers POST /api_keys/verify, so that a verification through
	// the API counts as a use and gives the same answer as every other entry
	// point. Required; it must be the verifier over Store.
	Verifier *keystore.Verifier
	// AdminTokens are the bearer tokens that may call the API, each at
	// least [MinAdminTokenLen] characters. Empty strings are ignored; at
	// least one token (here or in Tokens) is required. They are admins,
	// named token-1, token-2, … ([BareTokens]).
	AdminTokens []string
	// Tokens are named admin tokens with roles (KEYGATE_ADMIN_TOKENS_FILE),
	// in addition to AdminTokens. A call beyond its token's role is 403
	// authorization_invalid and changes nothing.
	Tokens []Token
	// Audit, when set, records every change before the call answers, and
	// serves GET /v1/audit_events. A change whose event cannot be recorded
	// answers 503 audit_unavailable. Default: none (no audit log).
	Audit *audit.Log
	// Logger receives one line per request. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives keygate_admin_requests_total. Default: none.
	Registerer prometheus.Registerer
	// Throttle limits failed authentications per client IP. Default: off.
	Throttle ThrottleOptions
}

// ThrottleOptions configure the throttling of failed authentications (an
// Authorization header without a right admin token) per client IP
// address. The zero value throttles nothing.
//
// A client whose failures exceed its budget gets 429 too_many_requests
// with Retry-After instead of 401, until the budget refills. A request
// with a right token is never throttled, whoever shares its address, and
// a request without an Authorization header counts for nothing.
type ThrottleOptions struct {
	// FailuresPerMinute is how fast a client's budget refills. Zero
	// disables throttling.
	FailuresPerMinute float64
	// Burst is how many failures a client may make in a row. Default:
	// FailuresPerMinute.
	Burst int
	// TrustedProxies are the direct peers whose X-Forwarded-For names the
	// client; from any other peer the header is ignored. They also decide
	// the client address of POST /api_keys/verify when its body gives no
	// client_ip.
	TrustedProxies []netip.Prefix
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Budget, when set, holds the failures instead of a budget of the
	// handler's own, and FailuresPerMinute, Burst and Now are its
	// ([NewFailureBudget]). Give the admin API and the web console
	// (keystore/console) the same one so that a client address has one
	// budget of failed admin tokens across both.
	Budget *FailureBudget
}

// FailureBudget is a per-client-address budget of failed authentications,
// to share between handlers ([ThrottleOptions.Budget]).
type FailureBudget struct {
	limiter *throttle.Limiter
}

// NewFailureBudget returns a budget with o's FailuresPerMinute, Burst and
// Now (zero FailuresPerMinute: no limit).
func NewFailureBudget(o ThrottleOptions) *FailureBudget {
	return &FailureBudget{limiter: throttle.New(throttle.Config{
		FailuresPerMinute: o.FailuresPerMinute,
		Burst:             o.Burst,
		Now:               o.Now,
	})}
}

// Fail counts a failure of client; ok is false when the client is over
// its budget, and wait says when it may try again.
func (b *FailureBudget) Fail(client netip.Addr) (ok bool, wait time.Duration) {
	if b == nil {
		return true, 0
	}
	return b.limiter.Fail(client)
}

// budget is o.Budget, or a new one of o's own.
func (o ThrottleOptions) budget() *FailureBudget {
	if o.Budget != nil {
		return o.Budget
	}
	return NewFailureBudget(o)
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// New returns the admin API handler. It serves the paths of docs/api.md
// under /api_keys and /v1/api_keys exactly, and answers 404 to any other
// path; mount it behind [http.StripPrefix] to serve it under another prefix.
func New(opts Options) (http.Handler, error) {
	opts = opts.withDefaults()
	if opts.Store == nil {
		return nil, errors.New("adminapi: Options.Store is required")
	}
	if opts.Verifier == nil {
		return nil, errors.New("adminapi: Options.Verifier is required")
	}
	if err := CheckAdminTokens(opts.AdminTokens); err != nil {
		return nil, fmt.Errorf("adminapi: %w", err)
	}
	named := append(BareTokens(opts.AdminTokens), opts.Tokens...)
	if err := CheckTokens(named); err != nil {
		return nil, fmt.Errorf("adminapi: %w", err)
	}
	tokens := newTokenSet(named)
	if tokens.empty() {
		return nil, errors.New("adminapi: at least one non-empty admin token is required")
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &handler{
		store:    opts.Store,
		verifier: opts.Verifier,
		tokens:   tokens,
		audit:    opts.Audit,
		log:      opts.Logger,
		metrics:  m,
		limiter:  opts.Throttle.budget(),
		proxies:  throttle.Proxies(opts.Throttle.TrustedProxies),
	}, nil
}

type handler struct {
	store    *keystore.Store
	verifier *keystore.Verifier
	tokens   tokenSet
	audit    *audit.Log // nil: no audit log
	log      *slog.Logger
	metrics  *metrics
	limiter  *FailureBudget // failed authentications
	proxies  throttle.Proxies
}

// call is one request on its way through the handler.
type call struct {
	r      *http.Request
	header http.Header // of the response, for operations that set fields
	id     string      // the {id} of the path, when the route has one
	keyID  string      // the key the request concerns, for the log; never a secret
	token  *adminToken // the admin token that authenticated it
}

// operation serves one method of one route. It returns the value to send
// with 200, or an error that [toAPIError] turns into the JSON error of docs/api.md.
type operation func(h *handler, c *call) (any, error)

// route is one path pattern and the operations it serves, by method.
type route struct {
	pattern string // as the metric and the log label it: "/api_keys/{id}"
	ops     map[string]operation
	allow   string // the Allow header of a 405
}

func newRoute(pattern string, ops map[string]operation) *route {
	methods := make([]string, 0, len(ops))
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		if ops[m] != nil {
			methods = append(methods, m)
		}
	}
	return &route{pattern: pattern, ops: ops, allow: strings.Join(methods, ", ")}
}

var (
	routeKeys = newRoute("/api_keys", map[string]operation{
		http.MethodGet:  (*handler).list,
		http.MethodPost: (*handler).create,
	})
	routeVerify = newRoute("/api_keys/verify", map[string]operation{
		http.MethodPost: (*handler).verify,
	})
	routeKey = newRoute("/api_keys/{id}", map[string]operation{
		http.MethodGet:    (*handler).get,
		http.MethodPatch:  (*handler).update,
		http.MethodDelete: (*handler).delete,
	})
	routeRevoke = newRoute("/api_keys/{id}/revoke", map[string]operation{
		http.MethodPost: (*handler).revoke,
	})
	routeSecret = newRoute("/api_keys/{id}/secret", map[string]operation{
		http.MethodGet: (*handler).secret,
	})
	routeUsage = newRoute("/api_keys/{id}/usage", map[string]operation{
		http.MethodGet: (*handler).usage,
	})
	routeRoll = newRoute("/api_keys/{id}/roll", map[string]operation{
		http.MethodPost: (*handler).roll,
	})
	routeRevokeAll = newRoute("/api_keys/revoke_all", map[string]operation{
		http.MethodPost: (*handler).revokeAll,
	})
	routeImport = newRoute("/api_keys/import", map[string]operation{
		http.MethodPost: (*handler).importKey,
	})
)

// match finds the route of path and its {id}; nil when there is none.
// /v1/api_keys… is the same route as /api_keys….
func match(path string) (*route, string) {
	if strings.TrimPrefix(path, "/v1") == "/audit_events" {
		return routeAuditEvents, ""
	}
	rest, ok := strings.CutPrefix(strings.TrimPrefix(path, "/v1"), "/api_keys")
	switch {
	case !ok:
		return nil, ""
	case rest == "":
		return routeKeys, ""
	case rest[0] != '/':
		return nil, ""
	}
	segs := strings.Split(rest[1:], "/")
	for _, s := range segs {
		if s == "" {
			return nil, ""
		}
	}
	switch {
	case len(segs) == 1 && segs[0] == "verify":
		return routeVerify, ""
	case len(segs) == 1 && segs[0] == "revoke_all":
		return routeRevokeAll, ""
	case len(segs) == 1 && segs[0] == "import":
		return routeImport, ""
	case len(segs) == 1:
		return routeKey, segs[0]
	case len(segs) == 2 && segs[1] == "revoke":
		return routeRevoke, segs[0]
	case len(segs) == 2 && segs[1] == "secret":
		return routeSecret, segs[0]
	case len(segs) == 2 && segs[1] == "usage":
		return routeUsage, segs[0]
	case len(segs) == 2 && segs[1] == "roll":
		return routeRoll, segs[0]
	}
	return nil, ""
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r = apierror.WithRequestID(w, r)
	traceID := apierror.RequestID(r)
	reqBody := r.Body // as the server gave it, for linger

	rt, id := match(r.URL.Path)
	label, op := routeOf(rt, r.Method)
	c := &call{r: r, header: w.Header(), id: id}
	resp, err := h.dispatch(w, c, rt, op, label)

	var body []byte
	if err == nil {
		if body, err = json.Marshal(resp); err != nil {
			err = fmt.Errorf("encoding the response: %w", err)
		}
	}
	status := http.StatusOK
	var apiErr *apierror.Error
	if err != nil {
		apiErr = toAPIError(err)
		status = apiErr.Status
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keygate"`)
		}
		if status == http.StatusRequestEntityTooLarge {
			w.Header().Set("Connection", "close")
		}
		apierror.Write(w, traceID, apiErr)
		if status == http.StatusRequestEntityTooLarge {
			linger(w, r, reqBody)
		}
	} else {
		writeJSON(w, append(body, '\n'))
	}
	h.metrics.observe(label, status)
	h.logRequest(r, label, status, time.Since(start), traceID, c, apiErr)
}

// Route names the route of r as keygate_admin_requests_total labels it:
// "METHOD pattern" ("GET /api_keys/{id}", /v1 folded into the same
// pattern), the bare pattern for a method the route does not serve, and
// "unmatched" for a path that is no route. Its values are few, and never
// hold an ID or a secret: fit for a trace span's name.
func Route(r *http.Request) string {
	rt, _ := match(r.URL.Path)
	label, _ := routeOf(rt, r.Method)
	return label
}

// routeOf returns the label of rt for method, and the operation that
// serves it (nil when none does).
func routeOf(rt *route, method string) (string, operation) {
	if rt == nil {
		return "unmatched", nil
	}
	if op := rt.ops[method]; op != nil {
		return method + " " + rt.pattern, op
	}
	return rt.pattern, nil
}

// dispatch authenticates the call, then runs op, the operation of its
// route and method, when there is one and the token's role allows it.
func (h *handler) dispatch(w http.ResponseWriter, c *call, rt *route, op operation, label string) (any, error) {
	c.token = h.tokens.authorized(c.r.Header.Get("Authorization"))
	switch {
	case c.token == nil:
		if c.r.Header.Get("Authorization") != "" {
			if ok, wait := h.limiter.Fail(h.proxies.ClientIP(c.r)); !ok {
				return nil, throttle.TooManyRequests(wait, "failed authentications")
			}
		}
		return nil, errUnauthenticated
	case rt == nil:
		return nil, &apierror.Error{Status: http.StatusNotFound, Code: "resource_not_found", Message: "not found",
			LongMessage: "no route for this path: the admin API serves /api_keys and /v1/api_keys"}
	case op == nil:
		w.Header().Set("Allow", rt.allow)
		return nil, &apierror.Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "method not allowed",
			LongMessage: c.r.Method + " is not allowed on " + rt.pattern + "; allowed: " + rt.allow}
	case !c.token.role.may(label):
		return nil, forbidden(c.token, label)
	}
	return op(h, c)
}

func (h *handler) logRequest(r *http.Request, route string, status int, d time.Duration, traceID string, c *call, e *apierror.Error) {
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.String("request_id", traceID),
	}
	if c.keyID != "" {
		attrs = append(attrs, slog.String("key_id", c.keyID))
	}
	if c.token != nil {
		attrs = append(attrs, slog.String("actor", c.token.name))
	}
	level := slog.LevelInfo
	if e != nil {
		attrs = append(attrs, slog.String("code", e.Code))
		if e.Status >= 500 {
			level = slog.LevelError
			if e.Err != nil {
				attrs = append(attrs, slog.String("err", e.Err.Error()))
			}
		}
	}
	h.log.LogAttrs(r.Context(), level, "admin api request", attrs...)
}
