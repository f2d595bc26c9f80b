package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keygate/keygate/keystore/audit/auditevent"
)

// AuditFilter selects audit events; an empty field selects all. A zero
// Limit is the server's default, 10.
type AuditFilter struct {
	APIKeyID      string
	Subject       string
	Action        string // e.g. "api_key.revoked"
	Actor         string // the admin token's name
	Limit         int
	StartingAfter string // an event ID: the page of events older than it
}

// AuditEvents returns one page of audit events, newest first. A token of
// the verify role gets an [*APIError] matching [ErrForbidden].
func (c *Client) AuditEvents(ctx context.Context, f AuditFilter) (*auditevent.Page, error) {
	q := url.Values{}
	for name, v := range map[string]string{"api_key_id": f.APIKeyID, "subject": f.Subject, "action": f.Action,
		"actor": f.Actor, "starting_after": f.StartingAfter} {
		if v != "" {
			q.Set(name, v)
		}
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var p auditevent.Page
	if err := c.do(ctx, http.MethodGet, "/v1/audit_events", q, nil, &p); err != nil {
		return nil, err
	}
	if p.Data == nil {
		p.Data = []*auditevent.Event{}
	}
	return &p, nil
}
