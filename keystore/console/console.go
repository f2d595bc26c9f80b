// Package console is keygate's web console for operators (docs/console.md):
// server-rendered pages at /console to sign in with an admin token, list,
// search and filter keys, create one (its secret shown once), see a key's
// fields, last use, usage chart, limits, credits and audit trail, revoke,
// roll, disable and enable it, revoke every key of a subject, and browse the
// audit log.
//
// Every operation goes through the admin API's own handler, in process,
// with the signed-in admin token: roles, validation, audit events, errors
// and logs are the admin API's, with no second implementation.
//
//	admin, _ := adminapi.New(adminapi.Options{…, AdminTokens: bare, Tokens: named})
//	con, _ := console.New(console.Options{
//		AdminAPI: admin,
//		Tokens:   append(adminapi.BareTokens(bare), named...),
//		Redis:    rdb,
//	})
//	mux.Handle(console.Path, con)
//	mux.Handle(console.Path+"/", con)
//	http.ListenAndServe(addr, console.WithHeaders(mux))
//
// Sessions live in Redis with an expiry, behind HttpOnly, SameSite=Strict
// cookies; every state-changing form carries a CSRF token; every response
// has a strict Content-Security-Policy and X-Frame-Options: DENY. The pages
// work without JavaScript; one small script adds a copy button.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/client"
	"github.com/redis/go-redis/v9"
)

// Path is where the console is served; mount the handler at Path and
// Path+"/".
const Path = "/console"

// DefaultSessionTTL is how long a sign-in lasts unless
// [Options.SessionTTL] says otherwise.
const DefaultSessionTTL = 8 * time.Hour

// maxFormBytes bounds the body of a console form.
const maxFormBytes = 64 << 10

// ContentSecurityPolicy is the policy of every console response: scripts,
// styles and images from the console itself only (no inline script or
// style), forms posted to it only, and no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Options configure the handler [New] returns. AdminAPI, Tokens and Redis
// are required.
type Options struct {
	// AdminAPI is the admin API's handler ([adminapi.New]), which the
	// console calls in process for everything it shows and changes.
	// Required.
	AdminAPI http.Handler
	// Tokens are the admin tokens that may sign in: the same the admin
	// API accepts (bare tokens through [adminapi.BareTokens]). A token of
	// the verify role is refused, since it may call nothing the console
	// needs. Removing a token from the set ends its sessions at their next
	// request. Required.
	Tokens []adminapi.Token
	// Redis holds the sessions, under Namespace. Required.
	Redis redis.UniversalClient
	// Namespace prefixes the console's Redis keys, as the store's.
	// Default "keygate".
	Namespace string
	// SessionTTL is how long a sign-in lasts, from the sign-in. Default
	// [DefaultSessionTTL].
	SessionTTL time.Duration
	// SecureCookies marks the cookies Secure even on requests that did not
	// come over TLS: set it when a TLS-terminating proxy is in front.
	// Cookies of requests that came over TLS are always Secure.
	SecureCookies bool
	// Origin is the console's public origin, "https://keys.example.com"
	// (scheme, host and port; no path), as browsers name it in the Origin
	// header of a form post: set it when a proxy in front rewrites the
	// Host header or terminates TLS. Without it the console expects the
	// request's own scheme and Host, or the X-Forwarded-Proto and
	// X-Forwarded-Host of a direct peer among Throttle.TrustedProxies.
	// Check a value with [ParseOrigin].
	Origin string
	// Throttle limits failed sign-ins per client address, as the admin
	// API limits failed authentications; with the admin API's
	// Throttle.Budget, against the same budget. The zero value throttles
	// nothing.
	Throttle adminapi.ThrottleOptions
	// Logger receives sign-ins, sign-outs and errors; never a token or a
	// secret. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

type handler struct {
	opts     Options
	tokens   tokens
	sessions *sessions
	onces    *onces
	limiter  *adminapi.FailureBudget
	proxies  throttle.Proxies
	origin   string // Options.Origin, as ParseOrigin returns it
	api      *client.Client
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

// ErrNoSignInToken is [New]'s error when every token has the verify role:
// nobody could sign in, and a server may run without its console.
var ErrNoSignInToken = errors.New("console: no admin token of the admin, manage or read role to sign in with")

// New returns the console's handler.
func New(opts Options) (http.Handler, error) {
	switch {
	case opts.AdminAPI == nil:
		return nil, errors.New("console: Options.AdminAPI is required")
	case opts.Redis == nil:
		return nil, errors.New("console: Options.Redis is required")
	}
	if err := adminapi.CheckTokens(opts.Tokens); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	origin := ""
	if opts.Origin != "" {
		o, err := ParseOrigin(opts.Origin)
		if err != nil {
			return nil, fmt.Errorf("console: Options.Origin: %w", err)
		}
		origin = o
	}
	var ts tokens
	for _, t := range opts.Tokens {
		if t.Role != adminapi.RoleVerify {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return nil, ErrNoSignInToken
	}
	if opts.Namespace == "" {
		opts.Namespace = "keygate"
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	budget := opts.Throttle.Budget
	if budget == nil {
		budget = adminapi.NewFailureBudget(opts.Throttle)
	}
	api, err := newAPIClient(opts.AdminAPI)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	h := &handler{
		opts:     opts,
		tokens:   ts,
		sessions: &sessions{rdb: opts.Redis, ns: opts.Namespace, ttl: opts.SessionTTL},
		onces:    &onces{rdb: opts.Redis, ns: opts.Namespace},
		limiter:  budget,
		proxies:  throttle.Proxies(opts.Throttle.TrustedProxies),
		origin:   origin,
		api:      api,
		pages:    pages,
		mux:      http.NewServeMux(),
	}
	h.routes()
	return h, nil
}

func (h *handler) routes() {
	h.mux.HandleFunc("GET "+Path+"/assets/{name}", h.asset)
	h.mux.HandleFunc("GET "+Path+"/sign-in", h.signInPage)
	h.mux.HandleFunc("POST "+Path+"/sign-in", h.signIn)
	h.mux.HandleFunc("POST "+Path+"/sign-out", h.action(h.signOut))
	h.mux.HandleFunc("GET "+Path+"/{$}", h.page(h.home))
	h.mux.HandleFunc("GET "+Path+"/keys", h.page(h.keysPage))
	h.mux.HandleFunc("POST "+Path+"/keys", h.action(h.createKey))
	h.mux.HandleFunc("GET "+Path+"/keys/new", h.page(h.newKeyPage))
	h.mux.HandleFunc("GET "+Path+"/keys/{id}", h.page(h.keyPage))
	h.mux.HandleFunc("POST "+Path+"/keys/{id}/revoke", h.action(h.revokeKey))
	h.mux.HandleFunc("POST "+Path+"/keys/{id}/roll", h.action(h.rollKey))
	h.mux.HandleFunc("POST "+Path+"/keys/{id}/disable", h.action(h.setEnabled(false)))
	h.mux.HandleFunc("POST "+Path+"/keys/{id}/enable", h.action(h.setEnabled(true)))
	h.mux.HandleFunc("GET "+Path+"/secret", h.page(h.secretPage))
	h.mux.HandleFunc("GET "+Path+"/revoke-subject", h.page(h.revokeSubjectPage))
	h.mux.HandleFunc("POST "+Path+"/revoke-subject", h.action(h.revokeSubject))
	h.mux.HandleFunc("GET "+Path+"/audit", h.page(h.auditPage))
	h.mux.HandleFunc(Path+"/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, nil, http.StatusNotFound, "Not found", "There is no console page at this address.")
	})
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = apierror.WithRequestID(w, r)
	setHeaders(w.Header())
	if r.URL.Path == Path {
		http.Redirect(w, r, Path+"/", http.StatusSeeOther)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// setHeaders sets the console's security headers.
func setHeaders(hd http.Header) {
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "same-origin") // "no-referrer" would make browsers send Origin: null
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// WithHeaders wraps the [http.ServeMux] that mounts the console so that
// every response to a path under [Path] carries the console's security
// headers, including those the mux writes itself without calling the
// console (the redirect of /console//keys to /console/keys, a 405).
func WithHeaders(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := path.Clean("/" + r.URL.Path); p == Path || strings.HasPrefix(p, Path+"/") {
			setHeaders(w.Header())
		}
		mux.ServeHTTP(w, r)
	})
}

// asset is an embedded file of assets/, served at Path/assets/<name>.
type asset struct {
	body        []byte
	contentType string
	version     string // a digest of body: pages link to name?v=version
}

// assets are the console's stylesheet and script, by name.
var assets = func() map[string]asset {
	entries, err := fs.ReadDir(assetFS, "assets")
	if err != nil {
		panic(err) // embedded at build time
	}
	m := map[string]asset{}
	for _, e := range entries {
		body, err := fs.ReadFile(assetFS, "assets/"+e.Name())
		if err != nil {
			panic(err)
		}
		d := sha256.Sum256(body)
		m[e.Name()] = asset{body: body, contentType: mime.TypeByExtension(filepath.Ext(e.Name())), version: hex.EncodeToString(d[:6])}
	}
	return m
}()

// assetURL is the URL of the named asset, with its content's version so
// that a browser's cache never serves an older binary's file.
func assetURL(name string) string {
	u := Path + "/assets/" + name
	if a, ok := assets[name]; ok {
		u += "?v=" + a.version
	}
	return u
}

// GET /console/assets/{name}: the files only, no listing. A URL with the
// file's version is cached for good; any other is revalidated.
func (h *handler) asset(w http.ResponseWriter, r *http.Request) {
	a, ok := assets[r.PathValue("name")]
	if !ok {
		h.fail(w, r, nil, http.StatusNotFound, "Not found", "There is no console page at this address.")
		return
	}
	if r.URL.Query().Get("v") == a.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("ETag", `"`+a.version+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// resolve returns the request's session and the admin token behind it;
// nil when there is none, it has expired, or its token is no longer
// configured as it was (removed, replaced, or now of the verify role).
func (h *handler) resolve(r *http.Request) (*signedIn, error) {
	id := cookie(r, sessionCookie)
	if id == "" || len(id) > 64 {
		return nil, nil
	}
	sess, err := h.sessions.get(r.Context(), id)
	if errors.Is(err, errNoSession) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	tok := h.tokens.byName(sess.Name)
	if tok == nil || !equal(sessionMAC(tok.Token, id), sess.MAC) {
		h.sessions.delete(r.Context(), id)
		return nil, nil
	}
	return &signedIn{id: id, session: *sess, token: *tok}, nil
}

// toSignIn sends the browser to the sign-in page; expired says its session
// cookie led nowhere.
func (h *handler) toSignIn(w http.ResponseWriter, r *http.Request) {
	target := Path + "/sign-in"
	if cookie(r, sessionCookie) != "" {
		h.setCookie(w, r, sessionCookie, "", -1)
		target += "?expired=1"
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// page wraps a GET handler that needs a session.
func (h *handler) page(fn func(http.ResponseWriter, *http.Request, *signedIn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := h.resolve(r)
		if err != nil {
			h.unavailable(w, r, nil, err)
			return
		}
		if s == nil {
			h.toSignIn(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		fn(w, withCaller(r, s), s)
	}
}

// action wraps a POST handler that needs a session and the session's CSRF
// token in the form: without either nothing is changed.
func (h *handler) action(fn func(http.ResponseWriter, *http.Request, *signedIn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.readForm(w, r, "nothing was changed") {
			return
		}
		s, err := h.resolve(r)
		if err != nil {
			h.unavailable(w, r, nil, err)
			return
		}
		if s == nil {
			h.toSignIn(w, r)
			return
		}
		if !equal(r.PostForm.Get("csrf"), s.session.CSRF) {
			h.fail(w, r, s, http.StatusForbidden, "Refused: the form's security token is missing or wrong",
				"Nothing was changed. Forms of this console carry a security token against cross-site request forgery; "+
					"this one did not carry the right one. Go back, reload the page and try again.")
			return
		}
		fn(w, withCaller(r, s), s)
	}
}

// readForm reads a POST's form, after checking that the console's own page
// sent it; when it answers false it has written the refusal, whose
// sentence ends with outcome ("nothing was changed").
func (h *handler) readForm(w http.ResponseWriter, r *http.Request, outcome string) bool {
	w.Header().Set("Cache-Control", "no-store")
	if !h.sameOrigin(r) {
		h.fail(w, r, nil, http.StatusForbidden, "Refused: another site sent this form",
			"The form came from another site, so "+outcome+".")
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		h.fail(w, r, nil, http.StatusUnsupportedMediaType, "Bad form",
			"The console's forms are sent as application/x-www-form-urlencoded; this one was not, so "+outcome+".")
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		h.fail(w, r, nil, http.StatusBadRequest, "Bad form", "The form could not be read, so "+outcome+".")
		return false
	}
	return true
}

// sameOrigin reports whether a POST's Origin, when the browser sent one,
// is the console's own: the same scheme, host and port.
func (h *handler) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	got, err := ParseOrigin(o)
	return err == nil && got == h.ownOrigin(r)
}

// ownOrigin is the origin the console is reached at: Options.Origin when
// set; else the request's scheme and Host, or those a trusted proxy (the
// direct peer) reports in X-Forwarded-Proto and X-Forwarded-Host.
func (h *handler) ownOrigin(r *http.Request) string {
	if h.origin != "" {
		return h.origin
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if chain := h.proxies.Chain(r); len(chain) > 0 && h.proxies.Contains(chain[0]) {
		if p := firstValue(r.Header.Get("X-Forwarded-Proto")); p != "" {
			scheme = p
		}
		if fh := firstValue(r.Header.Get("X-Forwarded-Host")); fh != "" {
			host = fh
		}
	}
	o, err := ParseOrigin(scheme + "://" + host)
	if err != nil {
		return "" // matches no Origin
	}
	return o
}

// firstValue is the first of a header's comma-separated values: what the
// proxy nearest the browser wrote.
func firstValue(v string) string {
	first, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(first)
}

// ParseOrigin checks an origin, "https://keys.example.com" or
// "http://10.0.0.5:8080", and returns it in the form browsers send in the
// Origin header: lower case, without the scheme's default port.
func ParseOrigin(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	switch {
	case err != nil:
		return "", fmt.Errorf("%q is not an origin", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%q: want http:// or https:// and a host, such as https://keys.example.com", s)
	case u.Host == "" || u.Hostname() == "" || u.User != nil:
		return "", fmt.Errorf("%q: want a host, such as https://keys.example.com", s)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return "", fmt.Errorf("%q: an origin has no path, query or fragment (the console is at %s under it)", s, Path)
	}
	host := strings.ToLower(u.Host)
	if p := u.Port(); (u.Scheme == "http" && p == "80") || (u.Scheme == "https" && p == "443") {
		host = strings.TrimSuffix(host, ":"+p)
	}
	return u.Scheme + "://" + host, nil
}
