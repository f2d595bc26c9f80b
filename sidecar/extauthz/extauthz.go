package extauthz

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/sidecar"
)

// The context extensions a route sets in its ExtAuthzPerRoute
// check_settings.
const (
	// ExtensionScopes names the scopes the route requires, comma or space
	// separated: keygate_scopes: "reports:read,reports:write".
	ExtensionScopes = "keygate_scopes"
	// ExtensionCost is what a request of the route spends of a metered
	// key's rate limits and credits, 1 to 1,000,000 (default 1).
	ExtensionCost = "keygate_cost"
)

// Options configure [New]. The zero value works.
type Options struct {
	// KeyLookup says where the original request carries its key, in the
	// syntax of [middleware.ParseKeyLookup]. Default
	// [middleware.DefaultKeyLookup]. The headers and query parameters it
	// names are removed from a request that is let through.
	KeyLookup string
	// Logger receives one debug line per decision and an error line per
	// store outage. Default slog.Default().
	Logger *slog.Logger
	// Throttle limits failed verifications per client address: the
	// CheckRequest's source, or when that is one of Throttle.TrustedProxies,
	// the client its X-Forwarded-For names. Unlike forward-auth's, it needs
	// no trusted proxy to be on: Envoy reports each request's own peer.
	// TrustedProxies also decide the X-Forwarded-* headers sent upstream.
	// Default: off.
	Throttle sidecar.ThrottleOptions
}

// Server implements envoy.service.auth.v3.Authorization. Its methods are
// safe for concurrent use.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	verifier *keystore.Verifier
	lookup   middleware.KeyLookup
	headers  []string // credential headers, canonical
	params   []string // credential query parameters
	trusted  []netip.Prefix
	limiter  *throttle.Limiter // nil: off
	log      *slog.Logger
}

// New returns the authorization server over v.
func New(v *keystore.Verifier, opts Options) (*Server, error) {
	if v == nil {
		return nil, errors.New("extauthz: nil verifier")
	}
	lookup, err := middleware.ParseKeyLookup(opts.KeyLookup)
	if err != nil {
		return nil, fmt.Errorf("extauthz: key lookup: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	t := opts.Throttle
	return &Server{
		verifier: v,
		lookup:   lookup,
		headers:  lookup.Headers(),
		params:   lookup.QueryParams(),
		trusted:  t.TrustedProxies,
		limiter: throttle.New(throttle.Config{
			FailuresPerMinute: t.FailuresPerMinute, Burst: t.Burst, MaxClients: t.MaxClients, Now: t.Now}),
		log: opts.Logger,
	}, nil
}

// Register registers s on g as the envoy.service.auth.v3.Authorization
// service.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	authv3.RegisterAuthorizationServer(g, s)
}

// Check decides one request as forward-auth would. Its error is always
// nil: a refusal, and an unreachable store, are denials.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	in := httpRequest(ctx, attrs)
	w := &recorder{header: http.Header{}}
	in = apierror.WithRequestID(w, in)
	w.header.Set("Cache-Control", "no-store")
	path := in.URL.Path // never the query, which may carry a key

	ext := attrs.GetContextExtensions()
	cost, ok := parseCost(ext[ExtensionCost])
	if !ok {
		s.log.WarnContext(ctx, "ext_authz: bad "+ExtensionCost+" context extension: want 1 to 1000000", "method", in.Method, "path", path)
		apierror.Write(w, apierror.RequestID(in), &apierror.Error{Status: http.StatusForbidden, Code: "request_cost_invalid",
			LongMessage: "the route's " + ExtensionCost + " must be 1 to 1000000"})
		return denied(w), nil
	}
	res, err := s.verifier.Check(ctx, keystore.Request{
		Secret: s.lookup.Key(in), Source: keystore.SourceForwardAuth, Scopes: parseScopes(ext[ExtensionScopes]), Cost: cost})
	middleware.SetLimitHeaders(w.header, res.Limits)
	if err != nil {
		if errors.Is(err, keystore.ErrUnavailable) && !(errors.Is(err, context.Canceled) && ctx.Err() != nil) {
			s.log.ErrorContext(ctx, "ext_authz: key store unavailable", "method", in.Method, "path", path, "err", err)
		} else {
			s.log.DebugContext(ctx, "ext_authz: refused", "method", in.Method, "path", path, "outcome", keystore.Outcome(err))
		}
		if !s.throttled(w, in, err) {
			middleware.WriteError(w, in, err)
		}
		return denied(w), nil
	}
	s.log.DebugContext(ctx, "ext_authz: allowed", "method", in.Method, "path", path, "key_id", res.Key.ID)
	return s.allowed(in, attrs.GetRequest().GetHttp(), res.Key, w.header), nil
}

// throttled counts a failed key against its client's budget, and when the
// budget is spent writes the 429 and reports true.
func (s *Server) throttled(w http.ResponseWriter, r *http.Request, err error) bool {
	if s.limiter == nil {
		return false
	}
	switch keystore.Outcome(err) {
	case "malformed", "not_found", "revoked", "expired":
	default:
		return false
	}
	client := throttle.Proxies(s.trusted).ClientIP(r)
	ok, wait := s.limiter.Fail(client)
	if ok {
		return false
	}
	s.log.DebugContext(r.Context(), "ext_authz: throttled a client over its budget of failed verifications", "client", client.String())
	apierror.Write(w, apierror.RequestID(r), throttle.TooManyRequests(wait, "failed verifications"))
	return true
}

// allowed is the OK answer for key: the identity and forwarding headers
// set, every other identity or forwarding header and the credential
// removed, and the RateLimit headers (already in limits) for the client.
func (s *Server) allowed(in *http.Request, h *authv3.AttributeContext_HttpRequest, key *keystore.APIKey, limits http.Header) *authv3.CheckResponse {
	set := http.Header{}
	sidecar.SetIdentity(set, key)
	xff, host, proto := sidecar.Forwarded(in, s.trusted)
	if xff != "" {
		set["X-Forwarded-For"] = []string{xff}
	}
	set["X-Forwarded-Host"] = []string{host}
	set["X-Forwarded-Proto"] = []string{proto}
	ok := &authv3.OkHttpResponse{}
	for _, name := range sortedNames(set) {
		// Envoy drops a header set to an empty value; removing it keeps a
		// client's copy from surviving.
		if v := set[name][0]; v != "" {
			ok.Headers = append(ok.Headers, header(name, v, false))
		} else {
			delete(set, name)
		}
	}
	// Envoy applies headers_to_remove after the headers above: a name set
	// there must not be removed.
	for _, name := range headerNames(h) {
		if set.Get(name) == "" && (sidecar.Spoofable(name) || s.credential(name)) && !slices.Contains(ok.HeadersToRemove, name) {
			ok.HeadersToRemove = append(ok.HeadersToRemove, name)
		}
	}
	if len(s.params) > 0 {
		q := in.URL.Query()
		for _, p := range s.params {
			if q.Has(p) {
				ok.QueryParametersToRemove = append(ok.QueryParametersToRemove, p)
			}
		}
	}
	for _, name := range sortedNames(limits) {
		if strings.HasPrefix(name, "Ratelimit") {
			ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, header(name, limits.Get(name), false))
		}
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

// credential reports whether name is one of the headers that carry the
// key, with "_" read as "-" as [sidecar.Spoofable] reads names.
func (s *Server) credential(name string) bool {
	name = strings.ReplaceAll(name, "_", "-")
	for _, h := range s.headers {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// denied turns what w recorded into Envoy's denial: the status, every
// header and the body go to the client.
func denied(w *recorder) *authv3.CheckResponse {
	d := &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(w.status)},
		Body:   w.body.String(),
	}
	for _, name := range sortedNames(w.header) {
		for i, v := range w.header[name] {
			d.Headers = append(d.Headers, header(name, v, i > 0))
		}
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(grpcCode(w.status)), Message: http.StatusText(w.status)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: d},
	}
}

func grpcCode(status int) codes.Code {
	switch status {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	}
	return codes.Unavailable
}

// header is one header for Envoy, replacing any header of that name
// unless appendValue. (Envoy versions that predate append_action read the
// unset append field as false: they replace too.)
func header(name, value string, appendValue bool) *corev3.HeaderValueOption {
	action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	if appendValue {
		action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	}
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: strings.ToLower(name), Value: value},
		AppendAction: action,
	}
}

func sortedNames(h http.Header) []string {
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// httpRequest is the original request as Envoy describes it: method,
// path and query, host, scheme, headers, and the client's address.
func httpRequest(ctx context.Context, attrs *authv3.AttributeContext) *http.Request {
	h := attrs.GetRequest().GetHttp()
	r := &http.Request{Method: h.GetMethod(), Host: h.GetHost(), Header: http.Header{}, URL: &url.URL{}}
	if u, err := url.ParseRequestURI(h.GetPath()); err == nil {
		r.URL = u
	}
	if h.GetScheme() == "https" {
		r.TLS = &tls.ConnectionState{}
	}
	eachHeader(h, func(name, value string) { r.Header.Add(name, value) })
	if sa := attrs.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		addr := sa.GetAddress()
		r.RemoteAddr = net.JoinHostPort(addr, strconv.FormatUint(uint64(sa.GetPortValue()), 10))
		r.Header["X-Forwarded-For"] = withoutLastHop(r.Header["X-Forwarded-For"], addr)
	}
	return r.WithContext(ctx)
}

// withoutLastHop drops addr from the end of X-Forwarded-For: Envoy
// appends its peer's address (use_remote_address) before it asks, and the
// peer is already the request's RemoteAddr.
func withoutLastHop(values []string, addr string) []string {
	if len(values) == 0 {
		return nil
	}
	last := values[len(values)-1]
	rest, hop := "", last
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		rest, hop = last[:i], last[i+1:]
	}
	if a, err := netip.ParseAddr(strings.TrimSpace(hop)); err != nil || a.Unmap().String() != addr {
		return values
	}
	values = values[:len(values)-1]
	if rest = strings.TrimSpace(rest); rest != "" {
		values = append(values, rest)
	}
	return values
}

// eachHeader calls f with every header of the request: from header_map
// when Envoy sends raw headers (encode_raw_headers), else from the
// headers map, which joins repeated headers with ",". Pseudo-headers
// (":path") are skipped.
func eachHeader(h *authv3.AttributeContext_HttpRequest, f func(name, value string)) {
	if hm := h.GetHeaderMap(); hm != nil {
		for _, hv := range hm.GetHeaders() {
			if v := hv.GetValue(); v != "" || len(hv.GetRawValue()) == 0 {
				f(hv.GetKey(), v)
			} else {
				f(hv.GetKey(), string(hv.GetRawValue()))
			}
		}
		return
	}
	for name, value := range h.GetHeaders() {
		if !strings.HasPrefix(name, ":") {
			f(name, value)
		}
	}
}

// headerNames returns the names of the request's headers as Envoy spells
// them, each once.
func headerNames(h *authv3.AttributeContext_HttpRequest) []string {
	var names []string
	eachHeader(h, func(name, _ string) {
		if !strings.HasPrefix(name, ":") && !slices.Contains(names, name) {
			names = append(names, name)
		}
	})
	slices.Sort(names)
	return names
}

// parseScopes splits keygate_scopes at commas and white space.
func parseScopes(v string) []string {
	return strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' })
}

// parseCost returns keygate_cost, 0 when it is not set, and false when it
// is not a cost.
func parseCost(v string) (int64, bool) {
	if v == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	return n, err == nil && n >= 1 && n <= keystore.MaxCost
}

// recorder is the http.ResponseWriter the denial is written to, so that
// it is written by the code that writes forward-auth's.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
