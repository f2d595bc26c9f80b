package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
)

func event(action audit.Action, id, subject, actor string) *audit.Event {
	return &audit.Event{Actor: audit.Actor{Type: audit.ActorAdminToken, Name: actor}, Action: action,
		APIKeyID: id, Subject: subject, RequestID: "req", RemoteAddr: "127.0.0.1"}
}

// TestListNewestFirstWithFiltersAndPages records events of two keys by two
// actors and pages through them with every filter, on a real redis-server.
func TestListNewestFirstWithFiltersAndPages(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New()
	log := audit.New(redistest.Server(t), audit.Options{Now: clock.Now})
	var ids []string
	for i := range 25 {
		e := event(audit.Updated, fmt.Sprintf("ak_%032d", i%2), fmt.Sprintf("user_%d", i%2), []string{"ci", "ops"}[i%2])
		if i%5 == 4 {
			e.Action = audit.Revoked
		}
		if err := log.Record(ctx, e); err != nil {
			t.Fatal(err)
		}
		if i > 0 && e.ID <= ids[len(ids)-1] {
			t.Fatalf("event %d's ID %s does not sort after %s", i, e.ID, ids[len(ids)-1])
		}
		if e.Time != clock.Now().UnixMilli() || !audit.ValidID(e.ID) {
			t.Fatalf("event %d: ID %s, time %d, want the clock's %d", i, e.ID, e.Time, clock.Now().UnixMilli())
		}
		ids = append(ids, e.ID)
		if i%3 == 0 {
			clock.Advance(time.Millisecond) // several events share a millisecond
		}
	}
	// Every event, newest first, in pages of 10.
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		p, err := log.List(ctx, audit.Filter{StartingAfter: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Data {
			got = append(got, e.ID)
		}
		if !p.HasMore {
			if pages != 2 || len(p.Data) != 5 {
				t.Fatalf("last page %d has %d events", pages, len(p.Data))
			}
			break
		}
		after = p.Data[len(p.Data)-1].ID
	}
	if len(got) != len(ids) {
		t.Fatalf("paged through %d events, want %d", len(got), len(ids))
	}
	for i := range got {
		if got[i] != ids[len(ids)-1-i] {
			t.Fatalf("event %d of the listing is %s, want %s", i, got[i], ids[len(ids)-1-i])
		}
	}
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want int
	}{
		{"key", audit.Filter{APIKeyID: fmt.Sprintf("ak_%032d", 1), Limit: 100}, 12},
		{"subject", audit.Filter{Subject: "user_0", Limit: 100}, 13},
		{"actor", audit.Filter{Actor: "ops", Limit: 100}, 12},
		{"action", audit.Filter{Action: audit.Revoked, Limit: 100}, 5},
		{"action and actor", audit.Filter{Action: audit.Revoked, Actor: "ci", Limit: 100}, 3},
		{"nothing", audit.Filter{Actor: "nobody"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := log.List(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Data) != tc.want || p.HasMore {
				t.Fatalf("%d events (has_more %v), want %d", len(p.Data), p.HasMore, tc.want)
			}
			for _, e := range p.Data {
				if tc.f.Action != "" && e.Action != tc.f.Action || tc.f.Actor != "" && e.Actor.Name != tc.f.Actor {
					t.Fatalf("event %+v does not match %+v", e, tc.f)
				}
			}
		})
	}
	for _, f := range []audit.Filter{{Limit: 101}, {Limit: -1}, {Action: "api_key.exploded"}, {StartingAfter: "ak_1"}} {
		if _, err := log.List(ctx, f); !errors.Is(err, audit.ErrBadFilter) {
			t.Errorf("List(%+v): %v, want ErrBadFilter", f, err)
		}
	}
}

// TestRetention moves an injected clock past the retention: listing hides
// the old events at once, and the next recording removes them from Redis.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	clock := testclock.New()
	rdb := redistest.Server(t)
	log := audit.New(rdb, audit.Options{Now: clock.Now, Retention: 48 * time.Hour})
	for range 3 {
		if err := log.Record(ctx, event(audit.Created, "ak_1", "s", "ci")); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(24 * time.Hour)
	if err := log.Record(ctx, event(audit.Deleted, "ak_1", "s", "ci")); err != nil {
		t.Fatal(err)
	}
	count := func() (stored, listed int) {
		n, err := rdb.ZCard(ctx, log.Key()).Result()
		if err != nil {
			t.Fatal(err)
		}
		p, err := log.List(ctx, audit.Filter{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return int(n), len(p.Data)
	}
	if s, l := count(); s != 4 || l != 4 {
		t.Fatalf("after a day: %d stored, %d listed, want 4 and 4", s, l)
	}
	clock.Advance(24*time.Hour + time.Millisecond) // the first three are 48h and 1ms old
	if s, l := count(); s != 4 || l != 1 {
		t.Fatalf("past the retention, before a write: %d stored, %d listed, want 4 and 1", s, l)
	}
	if err := log.Record(ctx, event(audit.Created, "ak_2", "s", "ci")); err != nil {
		t.Fatal(err)
	}
	if s, l := count(); s != 2 || l != 2 {
		t.Fatalf("past the retention, after a write: %d stored, %d listed, want 2 and 2", s, l)
	}
}

// TestClockBehind records from a clock that runs behind the newest event
// (another instance's runs ahead): IDs still grow, and the time does not go
// back.
func TestClockBehind(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	ahead, behind := testclock.New(), testclock.New()
	ahead.Advance(time.Minute)
	first := event(audit.Created, "ak_1", "s", "a")
	if err := audit.New(rdb, audit.Options{Now: ahead.Now}).Record(ctx, first); err != nil {
		t.Fatal(err)
	}
	second := event(audit.Revoked, "ak_1", "s", "b")
	if err := audit.New(rdb, audit.Options{Now: behind.Now}).Record(ctx, second); err != nil {
		t.Fatal(err)
	}
	if second.ID <= first.ID || second.Time != first.Time {
		t.Fatalf("IDs %s then %s, times %d then %d", first.ID, second.ID, first.Time, second.Time)
	}
	got, err := audit.New(rdb, audit.Options{Now: behind.Now}).After(ctx, first.ID, 10)
	if err != nil || len(got) != 1 || got[0].ID != second.ID {
		t.Fatalf("After(%s) = %v, %v", first.ID, got, err)
	}
}

// TestDiff checks the changes of each kind of event, and that the secret
// is never one of them.
func TestDiff(t *testing.T) {
	desc := "old"
	exp := int64(1_800_000_000_000)
	before := &keystore.APIKey{Object: "api_key", ID: "ak_1", Type: "api_key", Name: "n", Subject: "s",
		Description: &desc, Scopes: []string{"a"}, Expiration: &exp, RateLimits: []keystore.RateLimit{},
		CreatedAt: 1, UpdatedAt: 1, Secret: "ak_secretsecret"}
	after := *before
	after.Description = nil
	after.Scopes = []string{"a", "b"}
	after.UpdatedAt = 2
	after.Secret = ""
	changes := func(c map[string]audit.Change) string {
		b, _ := json.Marshal(c)
		return string(b)
	}
	if got, want := changes(audit.Diff(before, &after)),
		`{"description":{"from":"old","to":null},"scopes":{"from":["a"],"to":["a","b"]}}`; got != want {
		t.Errorf("update: %s, want %s", got, want)
	}
	created := changes(audit.Diff(nil, before))
	for _, want := range []string{`"name":{"from":null,"to":"n"}`, `"subject":{"from":null,"to":"s"}`, `"expiration":{"from":null,"to":1800000000000}`} {
		if !strings.Contains(created, want) {
			t.Errorf("create: %s lacks %s", created, want)
		}
	}
	for _, never := range []string{"secret", "updated_at", "created_at", `"id"`, "credits"} {
		if strings.Contains(created, never) {
			t.Errorf("create: %s holds %s", created, never)
		}
	}
	if got := changes(audit.Diff(before, before)); got != "{}" {
		t.Errorf("no change: %s", got)
	}
	if deleted := changes(audit.Diff(before, nil)); !strings.Contains(deleted, `"scopes":{"from":["a"],"to":null}`) {
		t.Errorf("delete: %s", deleted)
	}
}
