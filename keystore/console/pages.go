package console

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/client"
)

// pageSize is how many keys the list shows a page.
const pageSize = 20

// notices are the messages a redirect after a change asks for by name
// (?done=…), so that no text of the user's travels in the URL.
var notices = map[string]string{
	"revoked":  "The key is revoked: it stops working at once.",
	"disabled": "The key is disabled: it is refused until it is enabled.",
	"enabled":  "The key is enabled.",
}

// GET /console/
func (h *handler) home(w http.ResponseWriter, r *http.Request, s *signedIn) {
	http.Redirect(w, r, Path+"/keys", http.StatusSeeOther)
}

// keyList is the key list's data.
type keyList struct {
	Query          string
	Subject        string
	IncludeInvalid bool
	Keys           []*keystore.APIKey
	Total          int
	Page, Pages    int
	First, Last    int // the 1-based positions of the page's first and last keys
	Prev, Next     string
}

// GET /console/keys?query=&subject=&include_invalid=on&page=
func (h *handler) keysPage(w http.ResponseWriter, r *http.Request, s *signedIn) {
	q := r.URL.Query()
	d := &keyList{
		Query:          strings.TrimSpace(q.Get("query")),
		Subject:        strings.TrimSpace(q.Get("subject")),
		IncludeInvalid: q.Get("include_invalid") != "",
		Page:           1,
	}
	if p, err := strconv.Atoi(q.Get("page")); err == nil && p > 1 && p <= 10000 {
		d.Page = p
	}
	c := h.api
	list, err := c.List(r.Context(), keystore.ListParams{Query: d.Query, Subject: d.Subject,
		IncludeInvalid: d.IncludeInvalid, Limit: pageSize, Offset: (d.Page - 1) * pageSize})
	if err != nil {
		h.apiFailed(w, r, s, err, Path+"/keys")
		return
	}
	d.Keys, d.Total = list.Data, list.TotalCount
	link := func(page int) string {
		v := url.Values{}
		if d.Query != "" {
			v.Set("query", d.Query)
		}
		if d.Subject != "" {
			v.Set("subject", d.Subject)
		}
		if d.IncludeInvalid {
			v.Set("include_invalid", "on")
		}
		v.Set("page", strconv.Itoa(page))
		return Path + "/keys?" + v.Encode()
	}
	d.Pages = max(1, (d.Total+pageSize-1)/pageSize)
	if d.Page > d.Pages {
		// Past the last page (an old link, a typed number): show the last.
		http.Redirect(w, r, link(d.Pages), http.StatusSeeOther)
		return
	}
	if len(d.Keys) > 0 {
		d.First = (d.Page-1)*pageSize + 1
		d.Last = d.First + len(d.Keys) - 1
	}
	if d.Page > 1 {
		d.Prev = link(d.Page - 1)
	}
	if d.Page < d.Pages {
		d.Next = link(d.Page + 1)
	}
	v := newView(s, "keys", "Keys", d)
	h.render(w, r, http.StatusOK, "keys", v)
}

// keyView is a key page's data.
type keyView struct {
	Key       *keystore.APIKey
	Status    string
	Claims    string
	Chart     *chart
	Range     string
	Ranges    []usageRange
	Events    []*audit.Event
	MoreAudit bool
	Graces    []grace
}

// usageRange is a span of the usage chart a key page offers.
type usageRange struct {
	Value, Label, Granularity string
	Span                      time.Duration
}

var usageRanges = []usageRange{
	{"hour", "Last hour, by minute", "minute", time.Hour},
	{"day", "Last 24 hours, by hour", "hour", 24 * time.Hour},
	{"month", "Last 30 days, by day", "day", 30 * 24 * time.Hour},
}

// grace is how long a rolled key keeps working, as the roll form offers.
type grace struct {
	Seconds int64
	Label   string
	Default bool
}

var graces = []grace{
	{0, "Revoke the old key now", false},
	{3600, "1 hour", false},
	{86400, "1 day", true},
	{7 * 86400, "7 days", false},
}

// GET /console/keys/{id}?range=hour|day|month
func (h *handler) keyPage(w http.ResponseWriter, r *http.Request, s *signedIn) {
	id := r.PathValue("id")
	c := h.api
	k, err := c.Get(r.Context(), id)
	if err != nil {
		h.apiFailed(w, r, s, err, Path+"/keys")
		return
	}
	d := &keyView{Key: k, Status: keyStatus(k), Ranges: usageRanges, Graces: graces, Range: "day"}
	if len(k.Claims) > 0 {
		d.Claims = string(k.Claims)
	}
	rg := usageRanges[1]
	for _, u := range usageRanges {
		if u.Value == r.URL.Query().Get("range") {
			rg, d.Range = u, u.Value
		}
	}
	end := h.opts.Now()
	hist, err := c.Usage(r.Context(), k.ID, rg.Granularity, end.Add(-rg.Span), end)
	if err != nil {
		h.apiFailed(w, r, s, err, Path+"/keys")
		return
	}
	d.Chart = newChart(hist, rg)
	page, err := c.AuditEvents(r.Context(), client.AuditFilter{APIKeyID: k.ID, Limit: 20})
	var ae *client.APIError
	switch {
	case err == nil:
		d.Events, d.MoreAudit = page.Data, page.HasMore
	case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
		// this server keeps no audit log
	default:
		h.apiFailed(w, r, s, err, Path+"/keys")
		return
	}
	v := newView(s, "keys", "Key "+k.Name, d)
	v.Notice = notices[r.URL.Query().Get("done")]
	h.render(w, r, http.StatusOK, "key", v)
}

// newKey is the create form's data: what was typed, when the admin API
// refused it.
type newKey struct {
	Name, Subject, Description, Scopes, ExpiresDays, Credits, RateLimit string
}

// GET /console/keys/new
func (h *handler) newKeyPage(w http.ResponseWriter, r *http.Request, s *signedIn) {
	v := newView(s, "keys", "Create an API key", &newKey{Subject: r.URL.Query().Get("subject")})
	h.render(w, r, http.StatusOK, "new", v)
}

// POST /console/keys: creates the key and sends the browser to the page
// that shows its secret once.
func (h *handler) createKey(w http.ResponseWriter, r *http.Request, s *signedIn) {
	f := r.PostForm
	form := &newKey{Name: f.Get("name"), Subject: f.Get("subject"), Description: f.Get("description"),
		Scopes: f.Get("scopes"), ExpiresDays: f.Get("expires_days"), Credits: f.Get("credits"), RateLimit: f.Get("rate_limit")}
	again := func(status int, msg string) {
		v := newView(s, "keys", "Create an API key", form)
		v.Error = msg
		h.render(w, r, status, "new", v)
	}
	creator := "console:" + s.token.Name
	p := keystore.CreateParams{Name: strings.TrimSpace(form.Name), Subject: strings.TrimSpace(form.Subject),
		Scopes: strings.Fields(strings.ReplaceAll(form.Scopes, ",", " ")), CreatedBy: &creator}
	if d := strings.TrimSpace(form.Description); d != "" {
		p.Description = &d
	}
	days, set, ok := formInt(r, "expires_days")
	if !ok || set && (days < 1 || days > 36500) {
		again(http.StatusBadRequest, "Expires in (days) must be a whole number from 1 to 36500, or empty for a key that never expires.")
		return
	}
	if set {
		p.SecondsUntilExpiration = new(days * 86400)
	}
	credits, set, ok := formInt(r, "credits")
	if !ok || set && credits < 0 {
		again(http.StatusBadRequest, "Credits must be a whole number of 0 or more, or empty for a key without credits.")
		return
	}
	if set {
		p.Credits = &keystore.Credits{Remaining: credits}
	}
	perMinute, set, ok := formInt(r, "rate_limit")
	if !ok || set && perMinute < 1 {
		again(http.StatusBadRequest, "Requests per minute must be a whole number of 1 or more, or empty for no rate limit.")
		return
	}
	if set {
		p.RateLimits = []keystore.RateLimit{{Name: "per-minute", Limit: perMinute, DurationMs: 60000}}
	}
	c := h.api
	k, err := c.Create(r.Context(), p)
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		again(http.StatusBadRequest, sentence(ae))
		return
	}
	if err != nil {
		h.apiFailed(w, r, s, err, Path+"/keys/new")
		return
	}
	h.reveal(w, r, s, revealed{KeyID: k.ID, Name: k.Name, Secret: k.Secret})
}

// reveal stores a new secret for the page that shows it once and sends
// the browser there (so that a reload repeats no change).
func (h *handler) reveal(w http.ResponseWriter, r *http.Request, s *signedIn, v revealed) {
	v.Session = sessionRef(s.id)
	c, err := h.onces.put(r.Context(), v)
	if err != nil {
		// The key is made; only its page is lost. Say so rather than
		// pretend nothing happened.
		h.opts.Logger.Error("console: keeping a new secret for its page", "key_id", v.KeyID, "err", err)
		h.failBack(w, r, s, http.StatusServiceUnavailable, "The key was made, but its secret cannot be shown",
			"The key store did not answer in time to show the secret. Roll the key "+v.KeyID+" to get a new secret.",
			Path+"/keys/"+v.KeyID)
		return
	}
	h.setCookie(w, r, onceCookie, c, int(onceTTL.Seconds()))
	http.Redirect(w, r, Path+"/secret", http.StatusSeeOther)
}

// sessionRef names a session in what Redis holds, without its ID.
func sessionRef(id string) string {
	d := sha256.Sum256([]byte("once:" + id))
	return hex.EncodeToString(d[:])
}

// secretView is the data of the page that shows a secret once.
type secretView struct {
	*revealed
	Gone bool
}

// GET /console/secret: the new secret, this once.
func (h *handler) secretPage(w http.ResponseWriter, r *http.Request, s *signedIn) {
	if r.Method == http.MethodHead {
		// A HEAD (a link checker, a prefetch) must not use up the one look.
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		return
	}
	c := cookie(r, onceCookie)
	h.setCookie(w, r, onceCookie, "", -1)
	var v revealed
	got, err := h.onces.take(r.Context(), c)
	switch {
	case errors.Is(err, errGone) || c == "":
	case err != nil:
		h.unavailable(w, r, s, err)
		return
	case got.Session != sessionRef(s.id):
	default:
		v = *got
	}
	d := &secretView{revealed: &v, Gone: v.Secret == ""}
	title := "New key"
	if d.Gone {
		title = "Secret no longer shown"
	}
	view := newView(s, "keys", title, d)
	h.render(w, r, http.StatusOK, "secret", view)
}

// POST /console/keys/{id}/revoke: reason, and the confirmation box.
func (h *handler) revokeKey(w http.ResponseWriter, r *http.Request, s *signedIn) {
	id := r.PathValue("id")
	back := Path + "/keys/" + url.PathEscape(id)
	if r.PostForm.Get("confirm") != "yes" {
		h.failBack(w, r, s, http.StatusBadRequest, "Not revoked: please confirm",
			"Tick the box that confirms the revocation; the key was not revoked.", back)
		return
	}
	c := h.api
	if _, err := c.Revoke(r.Context(), id, reasonOf(r)); err != nil {
		h.apiFailed(w, r, s, err, back)
		return
	}
	http.Redirect(w, r, back+"?done=revoked", http.StatusSeeOther)
}

// reasonOf returns the revocation reason of a form; nil when none was
// given.
func reasonOf(r *http.Request) *string {
	if t := strings.TrimSpace(r.PostForm.Get("reason")); t != "" {
		return &t
	}
	return nil
}

// POST /console/keys/{id}/roll: a new key replaces this one, which works
// for the chosen grace; the new secret is shown once.
func (h *handler) rollKey(w http.ResponseWriter, r *http.Request, s *signedIn) {
	id := r.PathValue("id")
	back := Path + "/keys/" + url.PathEscape(id)
	secs, _, ok := formInt(r, "grace")
	if !ok || secs < 0 || secs > keystore.MaxSecondsUntilExpiration {
		h.failBack(w, r, s, http.StatusBadRequest, "Not rolled", "Choose how long the old key keeps working.", back)
		return
	}
	if secs == 0 && r.PostForm.Get("confirm") != "yes" {
		h.failBack(w, r, s, http.StatusBadRequest, "Not rolled: please confirm",
			"Rolling with \"Revoke the old key now\" stops the old key at once: tick the box that confirms it. The key was not rolled.", back)
		return
	}
	c := h.api
	k, err := c.Roll(r.Context(), id, time.Duration(secs)*time.Second)
	if err != nil {
		h.apiFailed(w, r, s, err, back)
		return
	}
	h.reveal(w, r, s, revealed{KeyID: k.ID, Name: k.Name, Secret: k.Secret, Rolled: id})
}

// POST /console/keys/{id}/disable and /enable
func (h *handler) setEnabled(enabled bool) func(http.ResponseWriter, *http.Request, *signedIn) {
	return func(w http.ResponseWriter, r *http.Request, s *signedIn) {
		id := r.PathValue("id")
		back := Path + "/keys/" + url.PathEscape(id)
		c := h.api
		var err error
		done := "enabled"
		if enabled {
			_, err = c.Enable(r.Context(), id)
		} else {
			_, err = c.Disable(r.Context(), id)
			done = "disabled"
		}
		if err != nil {
			h.apiFailed(w, r, s, err, back)
			return
		}
		http.Redirect(w, r, back+"?done="+done, http.StatusSeeOther)
	}
}

// revokeSubjectView is the bulk revoke page's data.
type revokeSubjectView struct {
	Subject string
	Done    bool
	Revoked int
}

// GET /console/revoke-subject?subject=
func (h *handler) revokeSubjectPage(w http.ResponseWriter, r *http.Request, s *signedIn) {
	v := newView(s, "keys", "Revoke every key of a subject", &revokeSubjectView{Subject: r.URL.Query().Get("subject")})
	h.render(w, r, http.StatusOK, "revoke_subject", v)
}

// POST /console/revoke-subject: subject, reason, and the confirmation box.
func (h *handler) revokeSubject(w http.ResponseWriter, r *http.Request, s *signedIn) {
	subject := strings.TrimSpace(r.PostForm.Get("subject"))
	back := Path + "/revoke-subject?" + url.Values{"subject": {subject}}.Encode()
	if subject == "" || r.PostForm.Get("confirm") != "yes" {
		h.failBack(w, r, s, http.StatusBadRequest, "Nothing revoked: please give the subject and confirm",
			"Give the subject and tick the box that confirms the revocation; no key was revoked.", back)
		return
	}
	c := h.api
	n, err := c.RevokeAll(r.Context(), subject, reasonOf(r))
	if err != nil {
		h.apiFailed(w, r, s, err, back)
		return
	}
	v := newView(s, "keys", "Revoke every key of a subject", &revokeSubjectView{Subject: subject, Done: true, Revoked: n})
	h.render(w, r, http.StatusOK, "revoke_subject", v)
}

// auditView is the audit log's data.
type auditView struct {
	APIKeyID, Subject, Action, Actor string
	Actions                          []string
	Events                           []*audit.Event
	Older                            string // the link to the next page, when there is one
	Newest                           string // the link back to the first page, on later pages
}

var auditActions = []string{
	string(audit.Created), string(audit.Updated), string(audit.Enabled), string(audit.Disabled), string(audit.Rolled),
	string(audit.Revoked), string(audit.BulkRevoked), string(audit.Deleted), string(audit.Imported),
}

// GET /console/audit?api_key_id=&subject=&action=&actor=&starting_after=
func (h *handler) auditPage(w http.ResponseWriter, r *http.Request, s *signedIn) {
	q := r.URL.Query()
	d := &auditView{APIKeyID: strings.TrimSpace(q.Get("api_key_id")), Subject: strings.TrimSpace(q.Get("subject")),
		Action: q.Get("action"), Actor: strings.TrimSpace(q.Get("actor")), Actions: auditActions}
	c := h.api
	f := client.AuditFilter{APIKeyID: d.APIKeyID, Subject: d.Subject, Action: d.Action, Actor: d.Actor,
		StartingAfter: q.Get("starting_after"), Limit: 50}
	page, err := c.AuditEvents(r.Context(), f)
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		h.failBack(w, r, s, http.StatusBadRequest, "Bad filter", sentence(ae), Path+"/audit")
		return
	}
	if err != nil {
		h.apiFailed(w, r, s, err, Path+"/keys")
		return
	}
	d.Events = page.Data
	filter := url.Values{}
	for name, val := range map[string]string{"api_key_id": d.APIKeyID, "subject": d.Subject, "action": d.Action, "actor": d.Actor} {
		if val != "" {
			filter.Set(name, val)
		}
	}
	if page.HasMore && len(page.Data) > 0 {
		older := url.Values{}
		for k, v := range filter {
			older[k] = v
		}
		older.Set("starting_after", page.Data[len(page.Data)-1].ID)
		d.Older = Path + "/audit?" + older.Encode()
	}
	if f.StartingAfter != "" {
		d.Newest = Path + "/audit?" + filter.Encode()
	}
	v := newView(s, "audit", "Audit log", d)
	h.render(w, r, http.StatusOK, "audit", v)
}
