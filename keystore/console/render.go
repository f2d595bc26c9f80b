package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/client"
)

// pageNames are the templates under templates/, each rendered inside
// layout.html.
var pageNames = []string{"signin", "keys", "key", "new", "secret", "revoke_subject", "audit", "error"}

var funcs = template.FuncMap{
	"when":   when,
	"whenp":  func(ms *int64) string { return whenPtr(ms, "never") },
	"status": keyStatus,
	"deref": func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	},
	"join":     strings.Join,
	"duration": func(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() },
	"add":      func(a, b int) int { return a + b },
	"path":     func() string { return Path },
	"asset":    assetURL,
}

func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: parsing %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// view is what every page gets: the page's own data in Data.
type view struct {
	Title   string
	Path    string // the console's path, for links
	User    *user  // nil on the sign-in page
	CSRF    string
	Notice  string // a success message
	Error   string // a failure message, shown above the page
	Current string // the nav entry of the page: "keys" or "audit"
	Data    any
}

// user is the signed-in admin token as the pages show it.
type user struct {
	Name string
	Role adminapi.Role
	// CanChange: the role may create, revoke, roll, disable and enable.
	// A read token sees no control that changes anything.
	CanChange bool
}

// newView is a page's view; current is its nav entry ("keys", "audit" or
// none).
func newView(s *signedIn, current, title string, data any) *view {
	v := &view{Title: title, Path: Path, Current: current, Data: data}
	if s != nil {
		role := s.token.Role
		v.User = &user{Name: s.token.Name, Role: role, CanChange: role.MayChange()}
		v.CSRF = s.session.CSRF
	}
	return v
}

// render writes page with status. A template that fails leaves a plain
// 500, before anything of it is written.
func (h *handler) render(w http.ResponseWriter, r *http.Request, status int, page string, v *view) {
	var buf bytes.Buffer
	if err := h.pages[page].Execute(&buf, v); err != nil {
		h.opts.Logger.Error("console: rendering a page", "page", page, "err", err, "request_id", apierror.RequestID(r))
		http.Error(w, "internal error: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// failure is the error page's data.
type failure struct {
	Status  int
	Heading string
	Message string
	Trace   string
	Back    string // a link back, when there is a good one
}

// fail renders the error page.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, s *signedIn, status int, heading, msg string) {
	h.failBack(w, r, s, status, heading, msg, "")
}

func (h *handler) failBack(w http.ResponseWriter, r *http.Request, s *signedIn, status int, heading, msg, back string) {
	v := newView(s, "", heading, &failure{Status: status, Heading: heading, Message: msg, Trace: apierror.RequestID(r), Back: back})
	h.render(w, r, status, "error", v)
}

// unavailable answers 503 for a store that did not answer.
func (h *handler) unavailable(w http.ResponseWriter, r *http.Request, s *signedIn, err error) {
	h.opts.Logger.LogAttrs(r.Context(), slog.LevelError, "console: store unavailable",
		slog.String("request_id", apierror.RequestID(r)), slog.String("err", err.Error()))
	w.Header().Set("Retry-After", "5")
	h.fail(w, r, s, http.StatusServiceUnavailable, "The key store is unavailable",
		"The key store did not answer; nothing is known to have changed. Try again in a few seconds.")
}

// apiFailed renders the error page for what the admin API answered to a
// call. back is where the page links to.
func (h *handler) apiFailed(w http.ResponseWriter, r *http.Request, s *signedIn, err error, back string) {
	var ae *client.APIError
	switch {
	case errors.Is(err, keystore.ErrUnavailable) || !errors.As(err, &ae):
		h.unavailable(w, r, s, err)
	case ae.Status == http.StatusForbidden:
		h.failBack(w, r, s, http.StatusForbidden, "Not allowed for your role",
			fmt.Sprintf("The admin token %s has the role %s, which may not do this. Nothing was changed.", s.token.Name, s.token.Role), back)
	case ae.Status == http.StatusNotFound:
		h.failBack(w, r, s, http.StatusNotFound, "Not found", sentence(ae), back)
	case ae.Status == http.StatusUnauthorized:
		h.toSignIn(w, r)
	default:
		h.failBack(w, r, s, ae.Status, "Refused by the admin API", sentence(ae), back)
	}
}

// sentence is the admin API's explanation of an error, as a sentence.
func sentence(ae *client.APIError) string {
	msg := ae.LongMessage
	if msg == "" {
		msg = ae.Message
	}
	if msg == "" {
		return "The admin API refused the call."
	}
	// Capitalize the first word, unless it is a field name
	// ("starting_after must be …"), which keeps its spelling.
	first, _, _ := strings.Cut(msg, " ")
	if !strings.ContainsAny(first, "_.") {
		r, n := utf8.DecodeRuneInString(msg)
		msg = string(unicode.ToUpper(r)) + msg[n:]
	}
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// when formats Unix milliseconds in UTC, to the minute.
func when(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC")
}

func whenPtr(ms *int64, none string) string {
	if ms == nil {
		return none
	}
	return when(*ms)
}

// keyStatus says whether a key verifies, and if not why.
func keyStatus(k *keystore.APIKey) string {
	switch {
	case k.Revoked:
		return "Revoked"
	case !k.Enabled:
		return "Disabled"
	case k.Expired:
		return "Expired"
	}
	return "Valid"
}

// formInt reads an optional whole number from a form; ok is false when
// the field holds something else.
func formInt(r *http.Request, name string) (v int64, set bool, ok bool) {
	s := strings.TrimSpace(r.PostForm.Get(name))
	if s == "" {
		return 0, false, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, true, false
	}
	return n, true, true
}
