package keystore

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Usage history: every verification of a known key is counted by outcome,
// in memory, and written at each flush (with last_used_at) in one pipeline:
// per key and minute, HINCRBY on the minute's, the hour's and the day's
// bucket. Buckets are hashes <ns>:usage:<id>:<m|h|d>:<start, Unix ms>
// (outcome → count) that expire after the retention of their granularity.

const (
	histValid = iota
	histRateLimited
	histUsageExceeded
	histInsufficientScope
	histIPNotAllowed
	histRevoked
	histDisabled
	histExpired
	histInvalidSecret
	histNone = -1
)

// granularity is one resolution of the history.
type granularity struct {
	name   string // as the API spells it
	tag    string // in the bucket's key
	step   time.Duration
	retain time.Duration
}

var granularities = []granularity{
	{"minute", "m", time.Minute, 48 * time.Hour},
	{"hour", "h", time.Hour, 35 * 24 * time.Hour},
	{"day", "d", 24 * time.Hour, 400 * 24 * time.Hour},
}

// ErrBadRange reports a usage query whose range or granularity the
// history cannot answer.
var ErrBadRange = errors.New("keystore: bad usage range")

// historyOutcome is the history's outcome of a verification of a known
// key, or histNone.
func historyOutcome(err error) int {
	switch {
	case err == nil:
		return histValid
	case errors.Is(err, ErrRateLimited):
		return histRateLimited
	case errors.Is(err, ErrUsageExceeded):
		return histUsageExceeded
	case errors.Is(err, ErrInsufficientScope):
		return histInsufficientScope
	case errors.Is(err, ErrRevoked):
		return histRevoked
	case errors.Is(err, ErrDisabled):
		return histDisabled
	case errors.Is(err, ErrIPNotAllowed):
		return histIPNotAllowed
	case errors.Is(err, ErrExpired):
		return histExpired
	case errors.Is(err, ErrNotFound):
		return histInvalidSecret // a known key ID with another secret
	}
	return histNone
}

type historyKey struct {
	id      string
	minute  int64 // Unix ms of the minute's start
	outcome int
}

// history counts verifications in memory until the next flush. Every
// verification of a known key writes a count, on every core, and cores
// verifying the same key must not take turns at one lock: the counts are
// split into stripes, each a map under its own lock on cache lines of its
// own, and a core keeps writing to the same stripe ([stripe]). Its lock is
// then taken by one core only, but for the flush, which sums the stripes.
// A key verified on several cores within a flush has a count in each of
// their stripes: at most [stripes] entries per key, minute and outcome.
type history struct {
	stripes [stripes]historyStripe
}

type historyStripe struct {
	mu      sync.Mutex
	pending map[historyKey]int64
	// last is the key and minute counted last, whose count, lastN, is not
	// in pending yet: verifications of one key in a row count without
	// hashing it.
	last  historyKey
	lastN int64
	_     [64]byte // keeps stripes' locks on separate cache lines
}

// record counts a verification of id at now in the stripe sn. Two callers
// may hold the same stripe, hence its lock.
func (h *history) record(sn *stripe, id string, now time.Time, outcome int) {
	k := historyKey{id: id, minute: now.Truncate(time.Minute).UnixMilli(), outcome: outcome}
	h.stripes[sn.n].add(k, 1)
}

func (s *historyStripe) add(k historyKey, n int64) {
	s.mu.Lock()
	if s.lastN > 0 && k == s.last {
		s.lastN += n
	} else {
		s.foldLocked()
		s.last, s.lastN = k, n
	}
	s.mu.Unlock()
}

// foldLocked moves the count of last into pending; s.mu is held.
func (s *historyStripe) foldLocked() {
	if s.lastN == 0 {
		return
	}
	if s.pending == nil {
		s.pending = make(map[historyKey]int64)
	}
	s.pending[s.last] += s.lastN
	s.last, s.lastN = historyKey{}, 0
}

func (h *history) take() map[historyKey]int64 {
	var batch map[historyKey]int64
	for i := range h.stripes {
		s := &h.stripes[i]
		s.mu.Lock()
		s.foldLocked()
		p := s.pending
		s.pending = nil
		s.mu.Unlock()
		if batch == nil {
			batch = p
			continue
		}
		for k, n := range p {
			batch[k] += n
		}
	}
	return batch
}

func (h *history) putBack(batch map[historyKey]int64) {
	sn := takeStripe()
	s := &h.stripes[sn.n]
	for k, n := range batch {
		s.add(k, n)
	}
	sn.release()
}

func (n keyNames) usage(id string, g granularity, start int64) string {
	return n.ns + ":usage:" + id + ":" + g.tag + ":" + strconv.FormatInt(start, 10)
}

// FlushUsage writes the counts recorded since the last flush, in one
// pipeline. Counts that could not be written are kept for the next flush.
// [Store.Close] and the background flush call it.
func (s *Store) FlushUsage(ctx context.Context) error {
	batch := s.history.take()
	if len(batch) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	expiring := make(map[string]time.Duration)
	for k, n := range batch {
		t := time.UnixMilli(k.minute)
		for _, g := range granularities {
			key := s.names.usage(k.id, g, t.Truncate(g.step).UnixMilli())
			pipe.HIncrBy(ctx, key, HistoryOutcomes[k.outcome], n)
			expiring[key] = g.retain
		}
	}
	for key, retain := range expiring {
		pipe.PExpire(ctx, key, retain)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.history.putBack(batch)
		return s.unavailable(opFlush, "flushing usage history", err)
	}
	return nil
}

// maxBuckets bounds one usage query.
const maxBuckets = 3000

// Usage returns the key's history at granularity ("minute", "hour" or
// "day") for the buckets that start in [start, end), oldest first, every
// bucket present (zeros included). It reports [ErrNotFound] for an unknown
// key, and [ErrBadRange] for a granularity it does not know, a range that
// is empty or spans more than 3,000 buckets.
func (s *Store) Usage(ctx context.Context, id, gname string, start, end time.Time) (*UsageHistory, error) {
	var g granularity
	for _, c := range granularities {
		if c.name == gname {
			g = c
		}
	}
	if g.name == "" {
		return nil, ErrBadRange
	}
	first, last := start.UTC().Truncate(g.step), end.UTC()
	if !last.After(first) || last.Sub(first)/g.step > maxBuckets {
		return nil, ErrBadRange
	}
	if _, err := s.Get(ctx, id); err != nil {
		return nil, err
	}
	out := &UsageHistory{Object: "api_key_usage", ID: id, Granularity: g.name, Data: []UsagePoint{}}
	var cmds []*redis.MapStringStringCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for t := first; t.Before(last); t = t.Add(g.step) {
			out.Data = append(out.Data, UsagePoint{T: t.UnixMilli()})
			cmds = append(cmds, p.HGetAll(ctx, s.names.usage(id, g, t.UnixMilli())))
		}
		return nil
	}); err != nil {
		return nil, s.unavailable(opGet, "reading usage of key "+id, err)
	}
	for i, cmd := range cmds {
		for j, name := range HistoryOutcomes {
			out.Data[i].Counts[j] = parseMillis(cmd.Val()[name])
		}
	}
	return out, nil
}
