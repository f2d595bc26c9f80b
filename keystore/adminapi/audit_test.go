package adminapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/redis/go-redis/v9"
)

func listEvents(t *testing.T, e *env, query string) *audit.Page {
	t.Helper()
	rec := e.do("GET", "/v1/audit_events"+query, "", "Authorization", "Bearer "+namedTokens(t)[adminapi.RoleRead])
	if rec.Code != 200 {
		t.Fatalf("GET /v1/audit_events%s: %d %s", query, rec.Code, rec.Body)
	}
	checkJSON(t, rec)
	var p audit.Page
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || p.Data == nil {
		t.Fatalf("not a page of events (%v): %s", err, rec.Body)
	}
	return &p
}

func changes(ev *audit.Event) string {
	b, _ := json.Marshal(ev.Changes)
	return string(b)
}

// TestAuditEventForEachChange makes each change through the API with named
// tokens, and reads each event back: its actor, action, key, subject,
// request ID (the response's and the log's), client address and fields.
func TestAuditEventForEachChange(t *testing.T) {
	e, _ := newAuditedEnv(t)
	tokens := namedTokens(t)
	as := func(role adminapi.Role, requestID string) []string {
		return []string{"Authorization", "Bearer " + tokens[role], "X-Request-Id", requestID}
	}
	rec := e.do("POST", "/v1/api_keys", `{"name":"CI","subject":"user_42","scopes":["reports:read"],"description":"deploys"}`,
		as(adminapi.RoleManage, "req-create")...)
	k := decodeKey(t, rec)
	steps := []struct {
		method, path, body string
		role               adminapi.Role
		requestID          string
	}{
		{"PATCH", "/v1/api_keys/" + k.ID, `{"scopes":["reports:read","reports:write"],"description":null,"seconds_until_expiration":3600}`, adminapi.RoleManage, "req-update"},
		{"POST", "/v1/api_keys/" + k.ID + "/revoke", `{"revocation_reason":"leaked"}`, adminapi.RoleManage, "req-revoke"},
		{"DELETE", "/v1/api_keys/" + k.ID, "", adminapi.RoleAdmin, "req-delete"},
	}
	for _, s := range steps {
		if rec := e.do(s.method, s.path, s.body, as(s.role, s.requestID)...); rec.Code != 200 || rec.Header().Get("X-Request-Id") != s.requestID {
			t.Fatalf("%s %s: %d %s (X-Request-Id %q)", s.method, s.path, rec.Code, rec.Body, rec.Header().Get("X-Request-Id"))
		}
	}
	p := listEvents(t, e, "?api_key_id="+k.ID)
	want := []struct {
		action    audit.Action
		actor     string
		requestID string
		changes   []string // substrings of the changes' JSON
	}{
		{audit.Deleted, "root", "req-delete", []string{`"name":{"from":"CI","to":null}`, `"revoked":{"from":true,"to":null}`}},
		{audit.Revoked, "ops", "req-revoke", []string{`"revocation_reason":{"from":null,"to":"leaked"}`, `"revoked":{"from":false,"to":true}`}},
		{audit.Updated, "ops", "req-update", []string{`"description":{"from":"deploys","to":null}`,
			`"scopes":{"from":["reports:read"],"to":["reports:read","reports:write"]}`, `"expiration":{"from":null,"to":`}},
		{audit.Created, "ops", "req-create", []string{`"name":{"from":null,"to":"CI"}`, `"scopes":{"from":null,"to":["reports:read"]}`}},
	}
	if len(p.Data) != len(want) || p.HasMore {
		t.Fatalf("%d events, want %d: %+v", len(p.Data), len(want), p.Data)
	}
	logs := e.logs.String()
	for i, w := range want {
		ev := p.Data[i]
		if ev.Object != "audit_event" || !strings.HasPrefix(ev.ID, "ae_") || ev.Time != e.clock.Now().UnixMilli() ||
			ev.Action != w.action || ev.Actor != (audit.Actor{Type: "admin_token", Name: w.actor}) ||
			ev.APIKeyID != k.ID || ev.Subject != "user_42" || ev.RequestID != w.requestID || ev.RemoteAddr != "192.0.2.1" {
			t.Errorf("event %d: %+v, want %s by %s, request %s", i, ev, w.action, w.actor, w.requestID)
		}
		for _, c := range w.changes {
			if !strings.Contains(changes(ev), c) {
				t.Errorf("%s: changes %s lack %s", w.action, changes(ev), c)
			}
		}
		for _, never := range []string{"secret", "updated_at", "last_used_at"} {
			if strings.Contains(changes(ev), never) {
				t.Errorf("%s: changes %s hold %s", w.action, changes(ev), never)
			}
		}
		if !strings.Contains(logs, `"request_id":"`+w.requestID+`","key_id":"`+k.ID+`","actor":"`+w.actor+`"`) {
			t.Errorf("no log line with request_id %s, the key and actor %s:\n%s", w.requestID, w.actor, logs)
		}
	}
	// Filters and paging through the API.
	if p := listEvents(t, e, "?actor=ops&action=api_key.revoked"); len(p.Data) != 1 || p.Data[0].RequestID != "req-revoke" {
		t.Errorf("actor and action filter: %+v", p.Data)
	}
	if p := listEvents(t, e, "?subject=user_42&limit=2"); len(p.Data) != 2 || !p.HasMore {
		t.Errorf("limit 2: %d events, has_more %v", len(p.Data), p.HasMore)
	} else if next := listEvents(t, e, "?subject=user_42&limit=2&starting_after="+p.Data[1].ID); len(next.Data) != 2 || next.HasMore || next.Data[1].Action != audit.Created {
		t.Errorf("second page: %+v", next.Data)
	}
	for _, q := range []string{"?limit=0", "?limit=101", "?action=api_key.melted", "?starting_after=ak_1"} {
		rec := e.do("GET", "/v1/audit_events"+q, "")
		if got := decodeError(t, rec); got.Status != 400 || got.Code != "form_param_invalid" {
			t.Errorf("%s: %+v", q, got)
		}
	}
}

// TestRequestIDWithoutOne checks that a request without X-Request-Id gets
// one ID in the header, the log and the event; and that an error body's
// clerk_trace_id is that ID as well.
func TestRequestIDWithoutOne(t *testing.T) {
	e, _ := newAuditedEnv(t)
	rec := e.do("POST", "/v1/api_keys", `{"name":"CI","subject":"user_42"}`)
	id := rec.Header().Get("X-Request-Id")
	k := decodeKey(t, rec)
	ev := listEvents(t, e, "?api_key_id="+k.ID).Data[0]
	if id == "" || ev.RequestID != id || ev.Actor.Name != "token-1" {
		t.Fatalf("header %q, event %+v", id, ev)
	}
	if !strings.Contains(e.logs.String(), `"request_id":"`+id+`"`) {
		t.Fatalf("no log line with request_id %s", id)
	}
	rec = e.do("POST", "/v1/api_keys", `{"name":"CI"}`, "X-Request-Id", "req-bad")
	if got := decodeError(t, rec); got.TraceID != "req-bad" || got.RequestHdr != "req-bad" {
		t.Fatalf("error: %+v", got)
	}
}

// TestAuditUnavailable points the audit log at a Redis that is gone: a
// create answers 503 audit_unavailable and leaves no key behind (its
// secret was never shown), an update answers 503 with the change made,
// and the log line carries the event the audit log could not.
func TestAuditUnavailable(t *testing.T) {
	rdb := redistest.Server(t)
	deadClient := redis.NewClient(redistest.ClientOptions("127.0.0.1:1")) // nothing listens there
	t.Cleanup(func() { deadClient.Close() })
	e := newEnvOn(t, nil, rdb, func(e *env, o *adminapi.Options) {
		o.Audit = audit.New(deadClient, audit.Options{})
	})
	rec := e.do("POST", "/v1/api_keys", `{"name":"CI","subject":"user_42"}`)
	got := decodeError(t, rec)
	if got.Status != 503 || got.Code != "audit_unavailable" || got.RetryAfter == "" {
		t.Fatalf("create without an audit log: %+v", got)
	}
	if l, err := e.store.List(context.Background(), keystore.ListParams{IncludeInvalid: true}); err != nil || l.TotalCount != 0 {
		t.Fatalf("a key whose creation was not audited is left: %+v %v", l, err)
	}
	k, err := e.store.Create(context.Background(), keystore.CreateParams{Name: "CI", Subject: "user_42"})
	if err != nil {
		t.Fatal(err)
	}
	rec = e.do("PATCH", "/v1/api_keys/"+k.ID, `{"scopes":["x"]}`, "X-Request-Id", "req-unaudited")
	if got := decodeError(t, rec); got.Status != 503 || got.Code != "audit_unavailable" {
		t.Fatalf("update without an audit log: %+v", got)
	}
	if k2, _ := e.store.Get(context.Background(), k.ID); len(k2.Scopes) != 1 {
		t.Fatalf("the update is not stored: %+v", k2)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "audit event not recorded") || !strings.Contains(logs, `\"request_id\":\"req-unaudited\"`) {
		t.Fatalf("the log lacks the event: %s", logs)
	}
}

// TestAuditEventsOfTheLifecycle: disabling, enabling, rolling, bulk
// revoking and importing each leave their event; the roles decide who may
// roll (manage), bulk revoke (manage) and import (admin only).
func TestAuditEventsOfTheLifecycle(t *testing.T) {
	e, _ := newAuditedEnv(t)
	tokens := namedTokens(t)
	as := func(role adminapi.Role) []string { return []string{"Authorization", "Bearer " + tokens[role]} }
	k := decodeKey(t, e.do("POST", "/v1/api_keys", `{"name":"n","subject":"user_7"}`, as(adminapi.RoleManage)...))
	for _, s := range []struct {
		method, path, body string
		role               adminapi.Role
		status             int
	}{
		{"PATCH", "/v1/api_keys/" + k.ID, `{"enabled":false}`, adminapi.RoleManage, 200},
		{"PATCH", "/v1/api_keys/" + k.ID, `{"enabled":true}`, adminapi.RoleManage, 200},
		{"POST", "/v1/api_keys/" + k.ID + "/roll", `{"expires_in_seconds":60}`, adminapi.RoleRead, 403},
		{"POST", "/v1/api_keys/" + k.ID + "/roll", `{"expires_in_seconds":60}`, adminapi.RoleManage, 200},
		{"POST", "/v1/api_keys/revoke_all", `{"subject":"user_7","revocation_reason":"offboarded"}`, adminapi.RoleManage, 200},
		{"POST", "/v1/api_keys/import", `{"name":"old","subject":"user_8","hash":{"algorithm":"sha256","value":"` + strings.Repeat("ab", 32) + `"}}`, adminapi.RoleManage, 403},
		{"POST", "/v1/api_keys/import", `{"name":"old","subject":"user_8","hash":{"algorithm":"sha256","value":"` + strings.Repeat("ab", 32) + `"}}`, adminapi.RoleAdmin, 200},
	} {
		if rec := e.do(s.method, s.path, s.body, as(s.role)...); rec.Code != s.status {
			t.Fatalf("%s %s as %s: %d, want %d: %s", s.method, s.path, s.role, rec.Code, s.status, rec.Body)
		}
	}
	var got []audit.Action
	for _, ev := range listEvents(t, e, "?limit=100").Data {
		got = append(got, ev.Action)
	}
	want := []audit.Action{audit.Imported, audit.BulkRevoked, audit.Created, audit.Rolled, audit.Enabled, audit.Disabled, audit.Created}
	if strings.Join(actionStrings(got), " ") != strings.Join(actionStrings(want), " ") {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func actionStrings(as []audit.Action) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = string(a)
	}
	return out
}
