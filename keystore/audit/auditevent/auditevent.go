// Package auditevent holds the wire form of keygate's audit events: what
// the admin API's GET /v1/audit_events returns and its Go client
// (keystore/client) decodes. Package audit, which records and lists the
// events in Redis, re-exports every name here (audit.Event is
// auditevent.Event); this package needs no Redis (docs/packages.md).
//
//	page, err := c.AuditEvents(ctx, client.AuditFilter{APIKeyID: id}) // keystore/client
//	if err != nil { … }
//	for _, e := range page.Data {
//		if e.Action == auditevent.Revoked {
//			fmt.Println(e.Actor.Name, "revoked", e.APIKeyID, "at", time.UnixMilli(e.Time))
//		}
//	}
//
// An event never holds a secret or a digest: [Diff] compares the keys' wire
// forms, which carry no digest, and leaves the secret out.
package auditevent

import (
	"bytes"
	"encoding/json"
	"slices"

	"github.com/keygate/keygate/keystore/apikey"
)

// Action names a kind of change, as the event's "action" and the
// webhook's "type".
type Action string

// The actions. Adding one is one line here, one in package audit's names,
// and one call where the change is made.
const (
	Created     Action = "api_key.created"
	Updated     Action = "api_key.updated"
	Enabled     Action = "api_key.enabled"
	Disabled    Action = "api_key.disabled"
	Rolled      Action = "api_key.rolled"
	Revoked     Action = "api_key.revoked"
	BulkRevoked Action = "api_key.bulk_revoked"
	Deleted     Action = "api_key.deleted"
	Imported    Action = "api_key.imported"
)

var actions = []Action{Created, Updated, Enabled, Disabled, Rolled, Revoked, BulkRevoked, Deleted, Imported}

// Valid reports whether a is one of the actions above.
func (a Action) Valid() bool { return slices.Contains(actions, a) }

// ActorAdminToken is the actor type of a call made with an admin token.
const ActorAdminToken = "admin_token"

// Actor is who made a change: for the admin API, the admin token's name.
type Actor struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// Change is one field's value before and after a change, in the key's
// wire form; null where the field had or has no value.
type Change struct {
	From json.RawMessage `json:"from"`
	To   json.RawMessage `json:"to"`
}

// Object is the "object" of every event.
const Object = "audit_event"

// Event is one change, in its wire form.
type Event struct {
	Object     string            `json:"object"` // always "audit_event"
	ID         string            `json:"id"`     // "ae_…", set by audit.Log.Record; IDs sort as the events were recorded
	Time       int64             `json:"time"`   // Unix ms, set by audit.Log.Record
	Actor      Actor             `json:"actor"`
	Action     Action            `json:"action"`
	APIKeyID   string            `json:"api_key_id"`
	Subject    string            `json:"subject"`
	RequestID  string            `json:"request_id"`  // the X-Request-Id, clerk_trace_id and log request_id of the call
	RemoteAddr string            `json:"remote_addr"` // the client's IP address
	Changes    map[string]Change `json:"changes"`     // by wire field name; never nil once recorded
}

// unaudited are the wire fields of a key that no event carries: the secret
// (shown once, never stored), the identity (the event's own fields) and
// the bookkeeping that moves without anyone changing the key.
var unaudited = map[string]bool{
	"secret": true, "object": true, "id": true, "type": true,
	"created_at": true, "updated_at": true, "last_used_at": true, "expired": true,
}

// Diff returns the fields that differ between two states of a key, each
// with its value before and after: nil before for a key that was just
// created (or imported), nil after for one that was deleted. Fields are
// compared in their wire form, so a field added to [apikey.APIKey] is
// audited without a change here. The secret is never part of it.
func Diff(before, after *apikey.APIKey) map[string]Change {
	from, to := wireFields(before), wireFields(after)
	out := map[string]Change{}
	for name := range from {
		if _, ok := to[name]; !ok {
			to[name] = nil
		}
	}
	for name, v := range to {
		if unaudited[name] {
			continue
		}
		f := from[name]
		if bytes.Equal(normal(f), normal(v)) {
			continue
		}
		out[name] = Change{From: normal(f), To: normal(v)}
	}
	return out
}

var null = json.RawMessage("null")

// normal is v with an absent value as null.
func normal(v json.RawMessage) json.RawMessage {
	if len(v) == 0 {
		return null
	}
	return v
}

// wireFields is k's wire form by field; empty for nil.
func wireFields(k *apikey.APIKey) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	if k == nil {
		return out
	}
	c := *k
	c.Secret = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return out // an APIKey always encodes
	}
	json.Unmarshal(b, &out)
	for name, v := range out {
		var buf bytes.Buffer
		if json.Compact(&buf, v) == nil {
			out[name] = buf.Bytes()
		}
	}
	return out
}

// Page is one page of events, newest first.
type Page struct {
	Data    []*Event `json:"data"`
	HasMore bool     `json:"has_more"`
}
