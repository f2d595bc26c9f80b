package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
)

// auditTimeout bounds the writing of an audit event, and of the removal of
// a new key whose event could not be written. Both run on after the
// client has gone away: the change is made, so its event must be.
const auditTimeout = 5 * time.Second

var routeAuditEvents = newRoute("/audit_events", map[string]operation{
	http.MethodGet: (*handler).auditEvents,
})

// recorded ends a handler that changed a key: before is the key as it was
// (nil when there was none), after as it is now (nil once deleted), err
// what the change returned. When the change is stored, which
// [keystore.ErrInvalidationUnconfirmed] also says, its audit event is
// recorded before the call answers; if it cannot be, the call answers 503
// audit_unavailable. It returns what the handler returns.
func (h *handler) recorded(c *call, action audit.Action, before, after *keystore.APIKey, err error) (any, error) {
	stored := err == nil || errors.Is(err, keystore.ErrInvalidationUnconfirmed)
	if !stored || (after == nil && action != audit.Deleted) {
		return nil, err
	}
	if aerr := h.record(c, action, before, after); aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return nil, err
	}
	return after, nil
}

// record writes the audit event of a change to one key, made by c's
// token: action, and the fields that differ between before and after. It
// returns nil without an audit log.
func (h *handler) record(c *call, action audit.Action, before, after *keystore.APIKey) error {
	k := after
	if k == nil {
		k = before
	}
	e := &audit.Event{Action: action, APIKeyID: c.id, Changes: audit.Diff(before, after)}
	if k != nil {
		e.APIKeyID, e.Subject = k.ID, k.Subject
	}
	return h.recordEvent(c, e)
}

// recordEvent writes e with the call's actor, request ID and client
// address: for changes that are not to one key (a bulk revoke).
func (h *handler) recordEvent(c *call, e *audit.Event) error {
	if h.audit == nil {
		return nil
	}
	e.Actor = audit.Actor{Type: audit.ActorAdminToken, Name: c.token.name}
	e.RequestID = apierror.RequestID(c.r)
	e.RemoteAddr = h.proxies.ClientIP(c.r).String()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.r.Context()), auditTimeout)
	defer cancel()
	err := h.audit.Record(ctx, e)
	if err != nil {
		// The change is made: the log keeps what the audit log could not.
		raw, _ := json.Marshal(e)
		h.log.LogAttrs(c.r.Context(), slog.LevelError, "audit event not recorded",
			slog.String("request_id", e.RequestID), slog.String("event", string(raw)), slog.String("err", err.Error()))
		return &apierror.Error{Status: http.StatusServiceUnavailable, Code: "audit_unavailable",
			Message: "audit log unavailable",
			LongMessage: "the change is made, but its audit event could not be recorded; " +
				"repeating the call is safe and records it",
			RetryAfter: retryAfterSeconds, Err: err}
	}
	return nil
}

// discard removes a key just created whose audit event could not be
// recorded: its secret never left, so repeating the create is safe.
func (h *handler) discard(c *call, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.r.Context()), auditTimeout)
	defer cancel()
	if err := h.store.Delete(ctx, id); err != nil {
		h.log.Error("removing a key whose creation could not be audited; its secret was never shown",
			"key_id", id, "err", err)
	}
}

// before reads the key a change is about to touch, for its audit event;
// nil without an audit log, or when there is no such key (the change then
// says so, after checking its input, as it would without an audit log).
func (h *handler) before(c *call) (*keystore.APIKey, error) {
	if h.audit == nil {
		return nil, nil
	}
	k, err := h.store.Get(c.r.Context(), c.id)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, nil
	}
	return k, err
}

// GET /v1/audit_events?api_key_id=&subject=&action=&actor=&limit=&starting_after=
func (h *handler) auditEvents(c *call) (any, error) {
	if h.audit == nil {
		return nil, &apierror.Error{Status: http.StatusNotFound, Code: "resource_not_found", Message: "not found",
			LongMessage: "this server keeps no audit log"}
	}
	q := c.r.URL.Query()
	f := audit.Filter{
		APIKeyID:      q.Get("api_key_id"),
		Subject:       q.Get("subject"),
		Action:        audit.Action(q.Get("action")),
		Actor:         q.Get("actor"),
		StartingAfter: q.Get("starting_after"),
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > audit.MaxLimit {
			return nil, badQuery("limit", "limit must be 1 to 100")
		}
		f.Limit = n
	}
	if f.Action != "" && !f.Action.Valid() {
		return nil, badQuery("action", "action must be one of the audit actions, such as api_key.revoked")
	}
	if f.StartingAfter != "" && !audit.ValidID(f.StartingAfter) {
		return nil, badQuery("starting_after", "starting_after must be the ID of an audit event (ae_…)")
	}
	return h.audit.List(c.r.Context(), f)
}
