package keystore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Usage control: rate limits and credits (docs/usage.md).
//
// Both live in the key's own record, so that one script on one Redis key
// checks and charges every limit and the credits of a verification: it
// works on Redis Cluster, and holds across every instance. A key without
// limits or credits never runs it.
//
// A limit of L per duration D is a GCRA (generic cell rate algorithm): the
// record keeps, per limit, a theoretical arrival time (TAT); a request of
// cost c at now moves it to max(TAT, now) + c·D/L and is admitted if that
// is at most now + D. In the long run it admits L per D; after an idle
// spell it admits a burst of L at once, so any window of length D admits at
// most 2L (the burst, then the steady rate).

// ErrRateLimited reports a valid key over one of its rate limits. The error
// [Verifier.Check] returns is a [*LimitError] that matches it.
var ErrRateLimited = errors.New("keystore: api key over its rate limit")

// ErrUsageExceeded reports a valid key without enough credits left. The
// error [Verifier.Check] returns is a [*LimitError] that matches it.
var ErrUsageExceeded = errors.New("keystore: api key out of credits")

// LimitError reports a request refused by a rate limit or by credits.
type LimitError struct {
	Err        error         // ErrRateLimited or ErrUsageExceeded
	RetryAfter time.Duration // until the request could pass; 0 when never (a cost over the limit or the refill, credits without refill)
	Limits     *LimitState   // the key's limits as of this request
}

func (e *LimitError) Error() string { return e.Err.Error() }

// Unwrap makes errors.Is(err, ErrRateLimited) (or ErrUsageExceeded) hold.
func (e *LimitError) Unwrap() error { return e.Err }

// LimitState is what one verification learned of a key's limits: each
// limit's remaining quota and reset, and the credits left.
type LimitState struct {
	Limits  []LimitStatus
	Credits *int64 // remaining after this request; nil without credits
}

// LimitStatus is one rate limit as of a verification.
type LimitStatus struct {
	RateLimit
	Remaining int64         // requests of cost 1 that would pass now
	Reset     time.Duration // until the quota is whole again
}

// Closest returns the limit closest to exhaustion (the smallest share
// remaining), or nil when there are none.
func (s *LimitState) Closest() *LimitStatus {
	var best *LimitStatus
	for i := range s.Limits {
		l := &s.Limits[i]
		if best == nil || l.Remaining*best.Limit < best.Remaining*l.Limit {
			best = l
		}
	}
	return best
}

// The limits of docs/usage.md.
const (
	MaxRateLimits       = 8
	MaxRateLimit        = 1_000_000_000
	MinLimitDurationMs  = 1000
	MaxLimitDurationMs  = 2_592_000_000 // 30 days
	MaxCredits          = 1_000_000_000_000
	MaxCost             = 1_000_000
	refillDay           = "day"
	refillMonth         = "month"
	fRateLimits         = "rl"  // name:limit:duration_ms, comma-separated
	fCredits            = "cr"  // remaining, decimal
	fRefill             = "crf" // interval:amount[:day_of_month]
	fLastRefill         = "crl" // Unix ms of the last refill
	tatPrefix           = "t:"  // + limit name: the GCRA's TAT, Unix ms
	limitNameExpression = `^[a-z0-9_.-]{1,32}$`
)

var limitName = regexp.MustCompile(limitNameExpression)

func checkRateLimits(ls []RateLimit) error {
	if len(ls) > MaxRateLimits {
		return invalid("rate_limits", "must hold at most %d limits", MaxRateLimits)
	}
	seen := make(map[string]bool, len(ls))
	for i, l := range ls {
		switch {
		case !limitName.MatchString(l.Name):
			return invalid("rate_limits", "[%d].name must match [a-z0-9_.-]{1,32}", i)
		case seen[l.Name]:
			return invalid("rate_limits", "[%d].name %q is used twice", i, l.Name)
		case l.Limit < 1 || l.Limit > MaxRateLimit:
			return invalid("rate_limits", "[%d].limit must be 1 to %d", i, MaxRateLimit)
		case l.DurationMs < MinLimitDurationMs || l.DurationMs > MaxLimitDurationMs:
			return invalid("rate_limits", "[%d].duration_ms must be %d to %d", i, MinLimitDurationMs, MaxLimitDurationMs)
		}
		seen[l.Name] = true
	}
	return nil
}

func checkCredits(c *Credits) error {
	if c == nil {
		return nil
	}
	if c.Remaining < 0 || c.Remaining > MaxCredits {
		return invalid("credits", ".remaining must be 0 to %d", int64(MaxCredits))
	}
	if r := c.Refill; r != nil {
		switch {
		case r.Interval != refillDay && r.Interval != refillMonth:
			return invalid("credits", `.refill.interval must be "day" or "month"`)
		case r.Amount < 1 || r.Amount > MaxCredits:
			return invalid("credits", ".refill.amount must be 1 to %d", int64(MaxCredits))
		case r.Interval == refillDay && r.DayOfMonth != 0:
			return invalid("credits", ".refill.day_of_month is for monthly refills only")
		case r.DayOfMonth < 0 || r.DayOfMonth > 31:
			return invalid("credits", ".refill.day_of_month must be 1 to 31")
		}
	}
	return nil
}

// encodeRateLimits is the record's form of ls.
func encodeRateLimits(ls []RateLimit) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Name + ":" + strconv.FormatInt(l.Limit, 10) + ":" + strconv.FormatInt(l.DurationMs, 10)
	}
	return strings.Join(parts, ",")
}

func decodeRateLimits(s string) []RateLimit {
	var ls []RateLimit
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(part, ":")
		if len(f) != 3 {
			continue
		}
		l := RateLimit{Name: f[0], Limit: parseMillis(f[1]), DurationMs: parseMillis(f[2])}
		if l.Limit > 0 && l.DurationMs > 0 {
			ls = append(ls, l)
		}
	}
	return ls
}

func encodeRefill(r *Refill) string {
	s := r.Interval + ":" + strconv.FormatInt(r.Amount, 10)
	if r.Interval == refillMonth {
		s += ":" + strconv.Itoa(max(r.DayOfMonth, 1))
	}
	return s
}

func decodeRefill(s string) *Refill {
	f := strings.Split(s, ":")
	if len(f) < 2 {
		return nil
	}
	r := &Refill{Interval: f[0], Amount: parseMillis(f[1])}
	if len(f) == 3 {
		r.DayOfMonth, _ = strconv.Atoi(f[2])
	}
	return r
}

// boundaries returns the latest refill boundary at or before now and the
// next one after it, in UTC.
func refillBoundaries(r *Refill, now time.Time) (last, next time.Time) {
	now = now.UTC()
	if r.Interval == refillDay {
		last = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		return last, last.AddDate(0, 0, 1)
	}
	at := func(y int, m time.Month) time.Time {
		daysIn := time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
		return time.Date(y, m, min(max(r.DayOfMonth, 1), daysIn), 0, 0, 0, 0, time.UTC)
	}
	last = at(now.Year(), now.Month())
	if last.After(now) {
		last = at(now.Year(), now.Month()-1)
	}
	y, m := last.Year(), last.Month()
	return last, at(y, m+1)
}

// limited reports whether verifying k, whose state st is, costs a meter
// call.
func (st *keyState) limited(k *APIKey) bool {
	return len(k.RateLimits) > 0 || k.Credits != nil || st.meterVia != ""
}

// meterID is the key whose record meters k, whose state st is: k itself,
// or during a rolled key's grace its successor, which holds the moved
// balance (see [Store.Roll]).
func (st *keyState) meterID(k *APIKey) string {
	if st.meterVia != "" {
		return st.meterVia
	}
	return k.ID
}

// meterScript checks and charges a request of cost ARGV[2] at ARGV[1] (Unix
// ms) against every rate limit and the credits in the record KEYS[1];
// ARGV[3] is the latest refill boundary (0 without refill). It writes only
// when the request passes every check (or, for credits, only the refill).
//
// It returns {status, retry_ms, credits, name1, limit1, duration1,
// remaining1, reset_ms1, …}: status 0 admitted, 1 over a rate limit, 2 out
// of credits, 3 no such key; credits is -1 without credits.
var meterScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'x', 'ca', 'rl', 'cr', 'crf', 'crl')
if f[1] or not f[2] then return {3, 0, -1} end
local now, cost, boundary = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {0, 0, -1}
local specs, fields = {}, {}
if f[3] then
  for name, limit, dur in string.gmatch(f[3], '([^:,]+):(%d+):(%d+)') do
    specs[#specs + 1] = {name, tonumber(limit), tonumber(dur)}
    fields[#fields + 1] = 't:' .. name
  end
end
local tats = {}
if #fields > 0 then
  local stored = redis.call('HMGET', KEYS[1], unpack(fields))
  for i, l in ipairs(specs) do
    local name, limit, dur = l[1], l[2], l[3]
    local step = dur / limit
    local tat = tonumber(stored[i] or '0')
    if tat < now then tat = now end
    local new = tat + cost * step
    if cost > limit then
      out[1] = 1
      out[2] = -1
      new = tat
    elseif new - dur > now then
      out[1] = 1
      if out[2] >= 0 then out[2] = math.max(out[2], math.ceil(new - dur - now)) end
      new = tat
    end
    tats[#tats + 1] = fields[i]
    tats[#tats + 1] = string.format('%.3f', new)
    local remaining = math.floor((now + dur - new) / step)
    if remaining < 0 then remaining = 0 end
    for _, v in ipairs({name, limit, dur, remaining, math.ceil(new - now)}) do out[#out + 1] = v end
  end
end
if out[1] ~= 0 then return out end
local set = tats
if f[4] then
  local credits = tonumber(f[4])
  if boundary > 0 and f[5] and tonumber(f[6] or f[2]) < boundary then
    credits = tonumber(string.match(f[5], '^[a-z]+:(%d+)'))
    redis.call('HSET', KEYS[1], 'cr', credits, 'crl', boundary)
  end
  if credits < cost then
    out[1] = 2
    out[3] = credits
    return out
  end
  credits = credits - cost
  set[#set + 1] = 'cr'
  set[#set + 1] = credits
  out[3] = credits
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
return out
`)

// meterCall is one request to meter: the script's arguments, and when
// the key's credits are next refilled (zero without refill).
type meterCall struct {
	key  *APIKey
	cost int64
	args []any
	next time.Time
	now  time.Time
}

func newMeterCall(k *APIKey, cost int64, now time.Time) *meterCall {
	var boundary int64
	var next time.Time
	if k.Credits != nil && k.Credits.Refill != nil {
		var last time.Time
		last, next = refillBoundaries(k.Credits.Refill, now)
		boundary = last.UnixMilli()
	}
	return &meterCall{key: k, cost: cost, args: []any{now.UnixMilli(), cost, boundary}, next: next, now: now}
}

// meter checks and charges a request of cost against k's limits and
// credits at now, in one script call. It returns the limits' state, and a
// [*LimitError] when a limit or the credits refuse the request, or
// [ErrNotFound] when the key is gone. A [Verifier] batches its calls
// through its loader instead.
func (s *Store) meter(ctx context.Context, k *APIKey, st *keyState, cost int64, now time.Time) (*LimitState, error) {
	c := newMeterCall(k, cost, now)
	raw, err := meterScript.Run(ctx, s.rdb, []string{s.names.record(st.meterID(k))}, c.args...).Slice()
	return s.metered(c, raw, err)
}

// metered interprets meterScript's reply to c.
func (s *Store) metered(c *meterCall, raw []any, err error) (*LimitState, error) {
	if err != nil {
		return nil, s.unavailable(opMeter, "metering key "+c.key.ID, err)
	}
	reply, err := meterReply(raw)
	if err != nil {
		return nil, s.unavailable(opMeter, "metering key "+c.key.ID, err)
	}
	st := &LimitState{Limits: reply.limits}
	if reply.credits >= 0 {
		cr := reply.credits
		st.Credits = &cr
	}
	switch reply.status {
	case 0:
		return st, nil
	case 1:
		// A cost over a limit never passes: no time to retry at.
		return st, &LimitError{Err: ErrRateLimited, RetryAfter: time.Duration(max(reply.retryMs, 0)) * time.Millisecond, Limits: st}
	case 2:
		var retry time.Duration
		if r := c.key.Credits.Refill; !c.next.IsZero() && r != nil && c.cost <= r.Amount {
			retry = c.next.Sub(c.now)
		}
		return st, &LimitError{Err: ErrUsageExceeded, RetryAfter: retry, Limits: st}
	}
	return nil, ErrNotFound
}

type metered struct {
	status, retryMs, credits int64
	limits                   []LimitStatus
}

// meterReply decodes meterScript's reply.
func meterReply(raw []any) (metered, error) {
	var m metered
	if len(raw) < 3 || (len(raw)-3)%5 != 0 {
		return m, fmt.Errorf("meter script replied %d values", len(raw))
	}
	ints := func(vs ...any) ([]int64, bool) {
		out := make([]int64, len(vs))
		for i, v := range vs {
			n, ok := v.(int64)
			if !ok {
				return nil, false
			}
			out[i] = n
		}
		return out, true
	}
	head, ok := ints(raw[:3]...)
	if !ok {
		return m, fmt.Errorf("meter script replied %v", raw[:3])
	}
	m.status, m.retryMs, m.credits = head[0], head[1], head[2]
	for j := 3; j < len(raw); j += 5 {
		name, _ := raw[j].(string)
		n, ok := ints(raw[j+1 : j+5]...)
		if !ok || name == "" {
			return m, fmt.Errorf("meter script replied a bad limit %v", raw[j:j+5])
		}
		m.limits = append(m.limits, LimitStatus{
			RateLimit: RateLimit{Name: name, Limit: n[0], DurationMs: n[1]},
			Remaining: n[2],
			Reset:     time.Duration(n[3]) * time.Millisecond,
		})
	}
	return m, nil
}
