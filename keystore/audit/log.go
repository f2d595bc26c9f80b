package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// DefaultRetention is how long events are kept unless [Options.Retention]
// says otherwise: 90 days.
const DefaultRetention = 2160 * time.Hour

// Options configure a [Log]. The zero value works.
type Options struct {
	// Namespace prefixes the Redis key, as the store's does. Default "keygate".
	Namespace string
	// Retention is how long an event is kept (KEYGATE_AUDIT_RETENTION).
	// Default [DefaultRetention].
	Retention time.Duration
	// Now is the clock that stamps events and decides what retention
	// drops. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "keygate"
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Log keeps events in one Redis sorted set, <namespace>:audit:events, so
// that it works unchanged on Redis Cluster. Every member has score 0 and
// reads "<event id> <event JSON>": IDs are fixed-width ("ae_", 13 digits of
// Unix ms, "_", 6 digits of sequence), so the set's lexical order is the
// order of recording, and retention and paging are ranges of it. Its
// methods are safe for concurrent use.
//
// Errors: an error wrapping [keystore.ErrUnavailable] when Redis cannot be
// reached.
type Log struct {
	rdb  redis.UniversalClient
	key  string
	opts Options
}

// New returns a log on rdb, which it does not close.
func New(rdb redis.UniversalClient, opts Options) *Log {
	opts = opts.withDefaults()
	return &Log{rdb: rdb, key: opts.Namespace + ":audit:events", opts: opts}
}

// Key is the Redis key of the log.
func (l *Log) Key() string { return l.key }

// idPrefix starts every event ID.
const idPrefix = "ae_"

var idForm = regexp.MustCompile(`^ae_[0-9]{13}_[0-9]{6}$`)

// ValidID reports whether id has the form of an event ID.
func ValidID(id string) bool { return idForm.MatchString(id) }

// appendScript adds ARGV[3] under the next ID: ARGV[1]'s time (13 digits)
// and sequence 0, or, when the newest event is as new or newer (another
// instance's clock runs ahead), its time and the next sequence; IDs never
// go back. Then it drops the events older than ARGV[2] (13 digits). It
// returns the ID.
var appendScript = redis.NewScript(`
local ms, seq = ARGV[1], 0
local last = redis.call('ZREVRANGEBYLEX', KEYS[1], '+', '-', 'LIMIT', 0, 1)[1]
if last then
  local lms = string.sub(last, 4, 16)
  if lms >= ms then
    ms = lms
    seq = tonumber(string.sub(last, 18, 23)) + 1
  end
end
local id = 'ae_' .. ms .. '_' .. string.format('%06d', seq)
redis.call('ZADD', KEYS[1], 0, id .. ' ' .. ARGV[3])
redis.call('ZREMRANGEBYLEX', KEYS[1], '-', '(ae_' .. ARGV[2])
return id
`)

// millis13 is t in Unix ms, 13 digits (years 2001 to 2286).
func millis13(t time.Time) string {
	return fmt.Sprintf("%013d", min(max(t.UnixMilli(), 0), 9_999_999_999_999))
}

// Record stores e, stamped now, and sets its ID and Time. It returns only
// once Redis has it; an error means it may or may not be stored.
func (l *Log) Record(ctx context.Context, e *Event) error {
	e.Object = Object
	if e.Changes == nil {
		e.Changes = map[string]Change{}
	}
	e.ID, e.Time = "", 0
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding an audit event: %w", err)
	}
	now := l.opts.Now()
	id, err := appendScript.Run(ctx, l.rdb, []string{l.key},
		millis13(now), millis13(now.Add(-l.opts.Retention)), body).Text()
	if err != nil {
		return fmt.Errorf("recording an audit event: %w: %w", keystore.ErrUnavailable, err)
	}
	e.ID = id
	e.Time, _ = strconv.ParseInt(id[3:16], 10, 64)
	return nil
}

// Filter selects events; an empty field selects all.
type Filter struct {
	APIKeyID string
	Subject  string
	Action   Action
	Actor    string // the actor's name
	// Limit is the most events returned: 1 to [MaxLimit]; 0 means [DefaultLimit].
	Limit int
	// StartingAfter is an event ID: only events recorded before it are
	// returned (the next page of a listing).
	StartingAfter string
}

// Limits of a page.
const (
	DefaultLimit = 10
	MaxLimit     = 100
)

// ErrBadFilter reports a filter that cannot select anything: a limit out
// of range, an unknown action, or a StartingAfter that is no event ID.
var ErrBadFilter = errors.New("audit: bad filter")

// scanBatch is how many events List reads per round trip.
const scanBatch = 256

// List returns the newest events that match f, at most f.Limit of them,
// newer than the retention. Filtering reads the events one batch after the
// other, so a filter that matches few events costs a read of every event
// kept.
func (l *Log) List(ctx context.Context, f Filter) (*Page, error) {
	if f.Limit == 0 {
		f.Limit = DefaultLimit
	}
	switch {
	case f.Limit < 1 || f.Limit > MaxLimit:
		return nil, fmt.Errorf("%w: limit must be 1 to %d", ErrBadFilter, MaxLimit)
	case f.Action != "" && !f.Action.Valid():
		return nil, fmt.Errorf("%w: unknown action %q", ErrBadFilter, f.Action)
	case f.StartingAfter != "" && !ValidID(f.StartingAfter):
		return nil, fmt.Errorf("%w: starting_after must be an audit event ID", ErrBadFilter)
	}
	upper := "+"
	if f.StartingAfter != "" {
		upper = "(" + f.StartingAfter
	}
	lower := "[" + idPrefix + millis13(l.opts.Now().Add(-l.opts.Retention))
	page := &Page{Data: []*Event{}}
	for {
		members, err := l.rdb.ZRevRangeByLex(ctx, l.key, &redis.ZRangeBy{Max: upper, Min: lower, Count: scanBatch}).Result()
		if err != nil {
			return nil, fmt.Errorf("listing audit events: %w: %w", keystore.ErrUnavailable, err)
		}
		for _, m := range members {
			e, ok := decode(m)
			if !ok || !f.matches(e) {
				continue
			}
			if len(page.Data) == f.Limit {
				page.HasMore = true
				return page, nil
			}
			page.Data = append(page.Data, e)
		}
		if len(members) < scanBatch {
			return page, nil
		}
		upper = "(" + members[len(members)-1]
	}
}

func (f *Filter) matches(e *Event) bool {
	return (f.APIKeyID == "" || e.APIKeyID == f.APIKeyID) &&
		(f.Subject == "" || e.Subject == f.Subject) &&
		(f.Action == "" || e.Action == f.Action) &&
		(f.Actor == "" || e.Actor.Name == f.Actor)
}

// After returns up to n events recorded after the event with ID after
// (from the oldest kept when after is ""), oldest first: what a consumer
// that has seen after reads next.
func (l *Log) After(ctx context.Context, after string, n int) ([]*Event, error) {
	lower := "-"
	if after != "" {
		lower = "(" + after + "~" // past every member of after itself: "~" sorts after " "
	}
	members, err := l.rdb.ZRangeByLex(ctx, l.key, &redis.ZRangeBy{Min: lower, Max: "+", Count: int64(n)}).Result()
	if err != nil {
		return nil, fmt.Errorf("reading audit events: %w: %w", keystore.ErrUnavailable, err)
	}
	out := make([]*Event, 0, len(members))
	for _, m := range members {
		if e, ok := decode(m); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// Newest returns the ID of the newest event kept, or "" when there is none.
func (l *Log) Newest(ctx context.Context) (string, error) {
	members, err := l.rdb.ZRevRangeByLex(ctx, l.key, &redis.ZRangeBy{Max: "+", Min: "-", Count: 1}).Result()
	if err != nil {
		return "", fmt.Errorf("reading audit events: %w: %w", keystore.ErrUnavailable, err)
	}
	if len(members) == 0 {
		return "", nil
	}
	id, _, _ := strings.Cut(members[0], " ")
	return id, nil
}

// decode reads a member of the set.
func decode(member string) (*Event, bool) {
	id, body, ok := strings.Cut(member, " ")
	if !ok || !ValidID(id) {
		return nil, false
	}
	var e Event
	if json.Unmarshal([]byte(body), &e) != nil {
		return nil, false
	}
	e.ID = id
	e.Time, _ = strconv.ParseInt(id[3:16], 10, 64)
	if e.Changes == nil {
		e.Changes = map[string]Change{}
	}
	return &e, true
}
