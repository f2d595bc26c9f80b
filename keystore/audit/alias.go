// Package audit records who changed which API key, and how: one [Event]
// per change (create, update, enable, disable, roll, revoke, bulk revoke,
// delete, import), kept in Redis for a retention period and listed newest
// first.
//
//	log := audit.New(rdb, audit.Options{Namespace: "keygate"})
//	e := &audit.Event{
//		Actor:    audit.Actor{Type: audit.ActorAdminToken, Name: "ci"},
//		Action:   audit.Revoked,
//		APIKeyID: after.ID,
//		Subject:  after.Subject,
//		Changes:  audit.Diff(before, after),
//	}
//	if err := log.Record(ctx, e); err != nil { … } // e.ID and e.Time are set
//	page, err := log.List(ctx, audit.Filter{APIKeyID: after.ID})
//
// The events' types are package auditevent's, which the Go client
// (keystore/client) shares without building Redis; the names below keep
// them here. An event never holds a secret or a digest.
package audit

import (
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit/auditevent"
)

// The wire form of an event: see package auditevent.
type (
	Action = auditevent.Action
	Actor  = auditevent.Actor
	Change = auditevent.Change
	Event  = auditevent.Event
	Page   = auditevent.Page
)

// The actions.
const (
	Created     = auditevent.Created
	Updated     = auditevent.Updated
	Enabled     = auditevent.Enabled
	Disabled    = auditevent.Disabled
	Rolled      = auditevent.Rolled
	Revoked     = auditevent.Revoked
	BulkRevoked = auditevent.BulkRevoked
	Deleted     = auditevent.Deleted
	Imported    = auditevent.Imported
)

// ActorAdminToken is the actor type of a call made with an admin token.
const ActorAdminToken = auditevent.ActorAdminToken

// Object is the "object" of every event.
const Object = auditevent.Object

// Diff returns the fields that differ between two states of a key, as
// [auditevent.Diff] does.
func Diff(before, after *keystore.APIKey) map[string]Change {
	return auditevent.Diff(before, after)
}
