package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
)

// ProxyOptions configure [NewProxy]. Only Upstream is required.
type ProxyOptions struct {
	// Upstream is where verified requests go: scheme http or https, a host,
	// and optionally a base path that request paths are appended to.
	Upstream *url.URL
	// KeyLookup says where requests carry their key, in the syntax of
	// [middleware.ParseKeyLookup]. Default [middleware.DefaultKeyLookup].
	// The headers and query parameters it names are removed before a
	// verified request is forwarded.
	KeyLookup string
	// Public lists path prefixes passed through without a key (--public).
	// Default none.
	Public []string
	// RequireScopes lists per-route scope requirements (--require-scopes),
	// each "METHOD /prefix=scope1,scope2"; METHOD "*" or left out means any
	// method, and a GET rule also covers HEAD. Default none.
	RequireScopes []string
	// Cost lists per-route costs (--cost), each "METHOD /prefix=N": what a
	// request spends of a metered key's rate limits and credits
	// (docs/usage.md). Default: 1 for every request.
	Cost []string
	// Transport carries requests to the upstream. Default [NewTransport]().
	Transport http.RoundTripper
	// Registerer receives keygate_proxy_requests_total{code}. Default: none.
	Registerer prometheus.Registerer
	// Logger receives upstream failures and store outages. Default
	// slog.Default().
	Logger *slog.Logger
	// Throttle limits failed verifications per client IP. Default: off.
	Throttle ThrottleOptions
	// TrustedProxies are the direct peers whose X-Forwarded-For,
	// X-Forwarded-Host and X-Forwarded-Proto are believed (--trusted-proxies),
	// for the headers sent upstream, for throttling, and for the client
	// address that keys with allowed CIDRs are checked against (the direct
	// peer, or X-Forwarded-For read from the right past these proxies).
	// Default: Throttle.TrustedProxies.
	TrustedProxies []netip.Prefix
}

func (o ProxyOptions) withDefaults() ProxyOptions {
	if o.Transport == nil {
		o.Transport = NewTransport()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// proxy is the sidecar's handler: verify, then forward.
type proxy struct {
	verifier *keystore.Verifier
	lookup   middleware.KeyLookup
	headers  []string // credential headers, removed before forwarding
	params   []string // credential query parameters, likewise
	router   *router
	costs    *router // of --cost rules
	rp       *httputil.ReverseProxy
	upstream *url.URL
	requests *statusCounter
	log      *slog.Logger
	throttle *throttler // nil: off
	trusted  throttle.Proxies
}

// NewProxy returns the sidecar's reverse proxy (README.md, "The sidecar"). Every request
// outside a public prefix is verified through v (source sidecar) with the
// scopes its route requires; a refused one is answered as
// docs/verification.md says, with keygate's JSON error (docs/api.md), and
// a verified one is forwarded with its credentials removed, the identity
// headers set, and X-Forwarded-For, -Host and -Proto set from what the
// sidecar knows (the client and the
// trusted proxies before it, see [ProxyOptions.TrustedProxies]). Every
// client header the upstream could take for an identity or forwarding
// header (X-Api-Key-*, X-Forwarded-*, Forwarded,
// X-Real-Ip, True-Client-Ip, X-Original-Url, X-Rewrite-Url, with "_" read
// as "-" and in any case) is removed, on public prefixes too; there the
// request is otherwise forwarded as it came. The upstream sees the Host
// the client sent, the path as the client sent it, and an X-Request-Id
// that is also the response's.
//
// Rules match every reading an upstream may take of the path (as sent or
// decoded once, with or without ";" parameters, repeated slashes and dot
// segments, case-insensitively for scope rules): a
// request needs the strictest of them, and one whose meaning depends on
// the decoder (an encoded slash, an escaped escape, a dot segment or ";"
// that appears only once decoded) is a 400 (request_path_invalid) when
// that changes what it needs. Bodies stream both ways,
// and each write of the response is flushed at once, so server-sent events
// pass. An upstream that cannot be reached is a 502 (code
// upstream_unavailable); one that accepts the connection but sends no
// response header within the transport's timeout is a 504
// (upstream_timeout).
//
// It returns an error, naming the option, when opts is invalid.
func NewProxy(v *keystore.Verifier, opts ProxyOptions) (http.Handler, error) {
	if v == nil {
		return nil, errors.New("sidecar: nil verifier")
	}
	opts = opts.withDefaults()
	u := opts.Upstream
	if u == nil {
		return nil, errors.New("sidecar: upstream: required")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("sidecar: upstream %q: want http://host[:port] or https://host[:port]", u.Redacted())
	}
	if u.User != nil {
		return nil, fmt.Errorf("sidecar: upstream %q: credentials in the URL are not supported", u.Redacted())
	}
	lookup, err := middleware.ParseKeyLookup(opts.KeyLookup)
	if err != nil {
		return nil, fmt.Errorf("sidecar: key lookup: %w", err)
	}
	throttleOpts := opts.Throttle
	if len(opts.TrustedProxies) > 0 {
		throttleOpts.TrustedProxies = opts.TrustedProxies
	}
	rt, err := newRouter(opts.Public, opts.RequireScopes)
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	costs, err := newCostRouter(opts.Cost)
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	p := &proxy{
		verifier: v,
		lookup:   lookup,
		headers:  lookup.Headers(),
		params:   lookup.QueryParams(),
		router:   rt,
		costs:    costs,
		upstream: u,
		log:      opts.Logger,
		throttle: newThrottler(throttleOpts, opts.Logger),
		trusted:  throttle.Proxies(throttleOpts.TrustedProxies),
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:       p.rewrite,
		Transport:     opts.Transport,
		FlushInterval: -1,
		BufferPool:    bufferPool{},
		ErrorHandler:  p.upstreamError,
		ModifyResponse: func(resp *http.Response) error {
			// The response already carries the request's ID (ServeHTTP).
			resp.Header.Del(apierror.HeaderRequestID)
			p.requests.inc(resp.StatusCode)
			return nil
		},
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "keygate",
		Name:      "proxy_requests_total",
		Help:      "Requests answered by the sidecar proxy, by HTTP status: denials, upstream responses and upstream failures.",
	}, []string{"code"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(requests); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("sidecar: registering metrics: %w", err)
			}
			requests = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	p.requests = &statusCounter{vec: requests}
	return p, nil
}

type proxyKeyContextKey struct{}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = apierror.WithRequestID(w, r)
	n, err := p.router.route(r)
	if err == nil && !n.public {
		var c need
		c, err = p.costs.route(r)
		n.cost = c.cost
	}
	if err != nil {
		p.requests.inc(http.StatusBadRequest)
		closeUnread(w, r)
		apierror.Write(w, apierror.RequestID(r), &apierror.Error{
			Status: http.StatusBadRequest, Code: "request_path_invalid", LongMessage: err.Error(),
		})
		return
	}
	if n.public {
		p.rp.ServeHTTP(w, r)
		return
	}
	res, err := p.verifier.Check(r.Context(), keystore.Request{
		Secret: p.lookup.Key(r), Source: keystore.SourceSidecar, Scopes: n.scopes, Cost: n.cost,
		ClientIP: p.trusted.ClientIP(r)})
	middleware.SetLimitHeaders(w.Header(), res.Limits)
	key := res.Key
	if err != nil {
		if errors.Is(err, keystore.ErrUnavailable) && !clientGone(r, err) {
			p.log.ErrorContext(r.Context(), "sidecar: key store unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		closeUnread(w, r)
		if p.throttle.deny(w, r, err) {
			p.requests.inc(http.StatusTooManyRequests)
			return
		}
		p.requests.inc(middleware.Status(err))
		middleware.WriteError(w, r, err)
		return
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxyKeyContextKey{}, key)))
}

// clientGone reports whether err came from the client going away rather
// than from the store.
func clientGone(r *http.Request, err error) bool {
	return errors.Is(err, context.Canceled) && r.Context().Err() != nil
}

// rewrite builds the outbound request. Out starts as a copy of In without
// hop-by-hop headers and without X-Forwarded-For, -Host, -Proto and
// Forwarded in their usual spelling; every other spelling, and every
// header the upstream could take for keygate's or a proxy's, is removed
// here.
func (p *proxy) rewrite(pr *httputil.ProxyRequest) {
	host := pr.In.Host
	pr.SetURL(p.upstream)
	pr.Out.Host = host // the upstream sees the Host the client asked for
	key, _ := pr.In.Context().Value(proxyKeyContextKey{}).(*keystore.APIKey)
	for name := range pr.Out.Header {
		if spoofable(name) || (key != nil && p.credential(name)) {
			delete(pr.Out.Header, name)
		}
	}
	p.setForwarded(pr)
	pr.Out.Header.Set(apierror.HeaderRequestID, apierror.RequestID(pr.In))
	if key == nil { // a public prefix
		return
	}
	if len(p.params) > 0 && pr.Out.URL.RawQuery != "" {
		q := pr.Out.URL.Query()
		found := false
		for _, name := range p.params {
			if q.Has(name) {
				q.Del(name)
				found = true
			}
		}
		if found {
			pr.Out.URL.RawQuery = q.Encode()
		}
	}
	setIdentity(pr.Out.Header, key)
}

// credential reports whether name, read as [spoofable] reads names, is
// one of the headers that carry the key.
func (p *proxy) credential(name string) bool {
	for _, h := range p.headers {
		if headerNameIs(name, h) {
			return true
		}
	}
	return false
}

// setForwarded sets X-Forwarded-For, -Host and -Proto as [Forwarded]
// gives them.
func (p *proxy) setForwarded(pr *httputil.ProxyRequest) {
	xff, host, proto := Forwarded(pr.In, p.trusted)
	if xff != "" {
		pr.Out.Header["X-Forwarded-For"] = []string{xff}
	}
	pr.Out.Header["X-Forwarded-Host"] = []string{host}
	pr.Out.Header["X-Forwarded-Proto"] = []string{proto}
}

// Forwarded returns the X-Forwarded-For, -Host and -Proto values that the
// proxy sends upstream for r, from what keygate knows: the client and the
// proxies between it and r.RemoteAddr, as far as the trusted proxies vouch
// for them (forwardedFor is "" when r.RemoteAddr is no IP address), and
// the Host and scheme (r.TLS) of the request, or those a trusted peer
// reported in its own X-Forwarded-Host and -Proto.
func Forwarded(r *http.Request, trusted []netip.Prefix) (forwardedFor, host, proto string) {
	proxies := throttle.Proxies(trusted)
	chain := proxies.Chain(r)
	if len(chain) > 0 && chain[0].IsValid() {
		hops := make([]string, len(chain))
		for i, a := range chain {
			hops[len(chain)-1-i] = a.String()
		}
		forwardedFor = strings.Join(hops, ", ")
	}
	host, proto = r.Host, "http"
	if r.TLS != nil {
		proto = "https"
	}
	if len(chain) > 0 && proxies.Contains(chain[0]) {
		if v := r.Header.Get("X-Forwarded-Proto"); v == "http" || v == "https" {
			proto = v
		}
		if v := r.Header.Get("X-Forwarded-Host"); v != "" && validHost(v) {
			host = v
		}
	}
	return forwardedFor, host, proto
}

// validHost reports whether v can be a host[:port] as a proxy reports it.
func validHost(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isAlnumByte(c) && strings.IndexByte(".-:[]_", c) < 0 {
			return false
		}
	}
	return true
}

func isAlnumByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// upstreamError answers a request whose upstream round trip failed before
// any response header was written.
func (p *proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	e := &apierror.Error{
		Status: http.StatusBadGateway, Code: "upstream_unavailable",
		LongMessage: "the upstream server could not be reached", Err: err,
	}
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		p.log.DebugContext(r.Context(), "sidecar: client gone before the upstream answered", "method", r.Method, "path", r.URL.Path)
	case errors.As(err, &op) && op.Op == "dial":
		p.log.WarnContext(r.Context(), "sidecar: upstream unreachable", "upstream", p.upstream.Host, "err", err)
	case errors.As(err, &ne) && ne.Timeout():
		e.Status, e.Code, e.LongMessage = http.StatusGatewayTimeout, "upstream_timeout", "the upstream server did not answer in time"
		p.log.WarnContext(r.Context(), "sidecar: upstream timed out", "upstream", p.upstream.Host, "method", r.Method, "path", r.URL.Path, "err", err)
	default:
		p.log.WarnContext(r.Context(), "sidecar: upstream failed", "upstream", p.upstream.Host, "method", r.Method, "path", r.URL.Path, "err", err)
	}
	p.requests.inc(e.Status)
	apierror.Write(w, apierror.RequestID(r), e)
}

// statusCounter counts responses by status code. It is fed where each
// status is decided (a denial, the upstream's response, an upstream
// failure), so the response writer is not wrapped, and it resolves each
// code's counter once.
type statusCounter struct {
	vec   *prometheus.CounterVec
	codes [600]atomic.Pointer[counterRef]
}

type counterRef struct{ prometheus.Counter }

func (c *statusCounter) inc(code int) {
	if code < 0 || code >= len(c.codes) {
		c.vec.WithLabelValues(strconv.Itoa(code)).Inc()
		return
	}
	ref := c.codes[code].Load()
	if ref == nil {
		ref = &counterRef{c.vec.WithLabelValues(strconv.Itoa(code))}
		c.codes[code].Store(ref)
	}
	ref.Inc()
}

// bufferPool recycles the 32 KiB buffers that copy response bodies, which
// the ReverseProxy otherwise allocates per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[32 << 10]byte)[:] }
func (bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		buffers.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}
