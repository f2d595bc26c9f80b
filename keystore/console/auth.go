package console

import (
	"log/slog"
	"net/http"
	"strconv"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/throttle"
)

// signInForm is the sign-in page's data.
type signInForm struct {
	Expired  bool
	SignedIn bool   // a session is live already
	Token    string // the form's CSRF token, before there is a session
}

// GET /console/sign-in
func (h *handler) signInPage(w http.ResponseWriter, r *http.Request) {
	s, err := h.resolve(r)
	if err != nil {
		h.unavailable(w, r, nil, err)
		return
	}
	if s != nil {
		http.Redirect(w, r, Path+"/keys", http.StatusSeeOther)
		return
	}
	h.renderSignIn(w, r, http.StatusOK, "")
}

// renderSignIn shows the sign-in form with a CSRF token in a cookie and
// the form (the double-submit pattern: there is no session yet): the
// cookie's token when the browser has one, else a fresh one.
func (h *handler) renderSignIn(w http.ResponseWriter, r *http.Request, status int, msg string) {
	// Another tab's sign-in page set the cookie already: keep its token,
	// so that both tabs' forms work.
	tok := cookie(r, signInCookie)
	if !wellFormedToken(tok) {
		var err error
		if tok, err = randomToken(); err != nil {
			h.unavailable(w, r, nil, err)
			return
		}
	}
	h.setCookie(w, r, signInCookie, tok, 0)
	v := newView(nil, "", "Sign in", &signInForm{Expired: r.URL.Query().Get("expired") == "1", Token: tok})
	v.Error = msg
	h.render(w, r, status, "signin", v)
}

// POST /console/sign-in: a right admin token opens a session; a wrong one
// counts against the client's budget of failures, as at the admin API.
func (h *handler) signIn(w http.ResponseWriter, r *http.Request) {
	if !h.readForm(w, r, "you were not signed in") {
		return
	}
	if !equal(r.PostForm.Get("csrf"), cookie(r, signInCookie)) {
		h.fail(w, r, nil, http.StatusForbidden, "Refused: the form's security token is missing or wrong",
			"You were not signed in. Open the sign-in page again and retry.")
		return
	}
	client := h.proxies.ClientIP(r)
	tok := h.tokens.match(r.PostForm.Get("token"))
	if tok == nil {
		if ok, wait := h.limiter.Fail(client); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(throttle.RetryAfter(wait)))
			h.opts.Logger.LogAttrs(r.Context(), slog.LevelWarn, "console sign-in throttled",
				slog.String("client", client.String()), slog.String("request_id", apierror.RequestID(r)))
			h.renderSignIn(w, r, http.StatusTooManyRequests,
				"Too many failed sign-ins from your address. Wait "+strconv.Itoa(throttle.RetryAfter(wait))+" seconds and try again.")
			return
		}
		h.opts.Logger.LogAttrs(r.Context(), slog.LevelInfo, "console sign-in failed",
			slog.String("client", client.String()), slog.String("request_id", apierror.RequestID(r)))
		h.renderSignIn(w, r, http.StatusUnauthorized, "That is not an admin token of this server (or it has the verify role, which cannot sign in).")
		return
	}
	// Signing in again ends the session the browser had.
	if old := cookie(r, sessionCookie); old != "" && len(old) <= 64 {
		if err := h.sessions.delete(r.Context(), old); err != nil {
			h.unavailable(w, r, nil, err)
			return
		}
	}
	id, err := h.sessions.create(r.Context(), *tok)
	if err != nil {
		h.unavailable(w, r, nil, err)
		return
	}
	h.setCookie(w, r, signInCookie, "", -1)
	h.setCookie(w, r, sessionCookie, id, int(h.opts.SessionTTL.Seconds()))
	h.opts.Logger.LogAttrs(r.Context(), slog.LevelInfo, "console sign-in",
		slog.String("actor", tok.Name), slog.String("role", string(tok.Role)),
		slog.String("client", client.String()), slog.String("request_id", apierror.RequestID(r)))
	http.Redirect(w, r, Path+"/keys", http.StatusSeeOther)
}

// POST /console/sign-out
func (h *handler) signOut(w http.ResponseWriter, r *http.Request, s *signedIn) {
	if err := h.sessions.delete(r.Context(), s.id); err != nil {
		h.unavailable(w, r, s, err)
		return
	}
	h.setCookie(w, r, sessionCookie, "", -1)
	h.opts.Logger.LogAttrs(r.Context(), slog.LevelInfo, "console sign-out",
		slog.String("actor", s.token.Name), slog.String("request_id", apierror.RequestID(r)))
	http.Redirect(w, r, Path+"/sign-in", http.StatusSeeOther)
}
