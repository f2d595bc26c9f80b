package apikey

import (
	"encoding/json"
	"strconv"
)

// RateLimit is one named limit of a key: at most Limit per DurationMs.
type RateLimit struct {
	Name       string `json:"name"`
	Limit      int64  `json:"limit"`
	DurationMs int64  `json:"duration_ms"`
}

// Credits is a key's balance: every admitted request spends its cost.
type Credits struct {
	Remaining    int64   `json:"remaining"`
	Refill       *Refill `json:"refill"`
	LastRefillAt *int64  `json:"last_refill_at"` // read-only: when the last refill happened
}

// Refill sets a key's credits back to Amount at every interval boundary
// (UTC): each midnight for "day", each DayOfMonth at midnight for "month"
// (the month's last day when it has fewer days).
type Refill struct {
	Interval   string `json:"interval"` // "day" or "month"
	Amount     int64  `json:"amount"`
	DayOfMonth int    `json:"day_of_month,omitempty"` // 1–31, months only; default 1
}

// HistoryOutcomes are the outcomes the usage history counts, in the order
// of [UsagePoint.Counts].
var HistoryOutcomes = [...]string{
	"valid", "rate_limited", "usage_exceeded", "insufficient_scope", "ip_not_allowed",
	"revoked", "disabled", "expired", "invalid_secret",
}

// UsageHistory is one key's verifications over time, by outcome.
type UsageHistory struct {
	Object      string       `json:"object"` // "api_key_usage"
	ID          string       `json:"id"`
	Granularity string       `json:"granularity"`
	Data        []UsagePoint `json:"data"`
}

// UsagePoint is one bucket: its start (Unix ms) and the count of each of
// [HistoryOutcomes].
type UsagePoint struct {
	T      int64
	Counts [len(HistoryOutcomes)]int64
}

// MarshalJSON writes {"t":…,"valid":…,"rate_limited":…,…}.
func (p UsagePoint) MarshalJSON() ([]byte, error) {
	b := append([]byte(`{"t":`), strconv.FormatInt(p.T, 10)...)
	for i, name := range HistoryOutcomes {
		b = append(b, `,"`...)
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, p.Counts[i], 10)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *UsagePoint) UnmarshalJSON(b []byte) error {
	var m map[string]int64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	p.T = m["t"]
	for i, name := range HistoryOutcomes {
		p.Counts[i] = m[name]
	}
	return nil
}
