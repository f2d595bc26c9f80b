package keystore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// sweepBatch is how many expired keys one listing script moves from valid
// to invalid; a listing runs it again until none is due.
const sweepBatch = 1000

// listScript sweeps a scope and reads one page of it. KEYS are the scope's
// valid, invalid and expiry sets. ARGV: now (Unix ms), offset, limit,
// sweepBatch, and "1" to list invalid keys too.
//
// It first moves the keys whose expiration has come from valid to invalid.
// When it moved sweepBatch of them it replies {-1}: call it again. Otherwise
// it replies {total, page}, the page a flat list of ID, created_at and the
// set it came from ("v" or "i").
//
// With invalid keys the page is the offset-th to (offset+limit)-th key of
// valid and invalid merged, newest first as one sorted set would order
// them (score, then member, descending). A binary search on how many of
// the first offset keys come from valid finds where to start, each probe a
// ZREVRANGE of one element: O(log² n).
var listScript = redis.NewScript(`
local now, offset, limit, sweep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, sweep)
for _, id in ipairs(due) do
  local created = redis.call('ZSCORE', KEYS[1], id)
  if created then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], created, id)
  end
  redis.call('ZREM', KEYS[3], id)
end
if #due == sweep then return {-1} end
local page = {}
if ARGV[5] ~= '1' then
  local r = redis.call('ZREVRANGE', KEYS[1], offset, offset + limit - 1, 'WITHSCORES')
  for i = 1, #r, 2 do
    page[#page + 1] = r[i]; page[#page + 1] = r[i + 1]; page[#page + 1] = 'v'
  end
  return {redis.call('ZCARD', KEYS[1]), page}
end
local na, nb = redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
local function at(key, i)
  local r = redis.call('ZREVRANGE', key, i, i, 'WITHSCORES')
  return r[1], tonumber(r[2])
end
-- whether member a (score sa) comes before member b, newest first
local function first(a, sa, b, sb)
  if sa ~= sb then return sa > sb end
  for k = 1, math.min(#a, #b) do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return x > y end
  end
  return #a > #b
end
local lo, hi = math.max(0, offset - nb), math.min(offset, na)
while lo < hi do
  local i = math.floor((lo + hi) / 2)
  local a, sa = at(KEYS[1], i)
  local b, sb = at(KEYS[2], offset - i - 1)
  if first(a, sa, b, sb) then lo = i + 1 else hi = i end
end
local a = redis.call('ZREVRANGE', KEYS[1], lo, lo + limit - 1, 'WITHSCORES')
local b = redis.call('ZREVRANGE', KEYS[2], offset - lo, offset - lo + limit - 1, 'WITHSCORES')
local i, j = 1, 1
while #page < 3 * limit and (i <= #a or j <= #b) do
  if j > #b or (i <= #a and first(a[i], tonumber(a[i + 1]), b[j], tonumber(b[j + 1]))) then
    page[#page + 1] = a[i]; page[#page + 1] = a[i + 1]; page[#page + 1] = 'v'; i = i + 2
  else
    page[#page + 1] = b[j]; page[#page + 1] = b[j + 1]; page[#page + 1] = 'i'; j = j + 2
  end
end
return {na + nb, page}
`)

// List returns one page of keys, newest first, and how many keys match in
// all. Without a query the page and the count come from the indexes of the
// subject (or of every subject) and the page's records; a query reads the
// name of every key of the scope. README.md ("Costs") has the figures.
func (s *Store) List(ctx context.Context, p ListParams) (*KeyList, error) {
	if err := validateList(&p); err != nil {
		return nil, err
	}
	if err := s.checkLayout(ctx); err != nil {
		return nil, err
	}
	sc := s.names.allScope()
	if p.Subject != "" {
		sc = s.names.subjectScope(p.Subject)
	}
	now := s.now()
	if _, err := s.repairJournal(ctx, now); err != nil {
		return nil, s.unavailable(opList, "repairing the listing indexes", err)
	}
	if p.Query != "" {
		return s.search(ctx, sc, p, now)
	}
	return s.listPage(ctx, sc, p, now)
}

// GetAll is [Store.List] with page numbers instead of an offset.
func (s *Store) GetAll(ctx context.Context, p GetAllParams) (*KeyList, error) {
	return s.List(ctx, listParams(p))
}

// indexEntry is a key ID as an index holds it.
type indexEntry struct {
	id        string
	createdAt int64
	place     place // the set it came from: placeValid or placeInvalid
}

// listAttempts bounds how often a listing reads its page again after
// correcting index entries that its records contradict.
const listAttempts = 3

// listPage serves a listing without a query from the scope's indexes. The
// records of the page have the last word: an entry whose record is gone
// or revoked is moved at once (neither state can be undone), and the page
// read again; other disagreements (an expiration the index has wrong) are
// journaled for a repair once changes in progress are done.
func (s *Store) listPage(ctx context.Context, sc scope, p ListParams, now time.Time) (*KeyList, error) {
	for attempt := 1; ; attempt++ {
		total, entries, err := s.readIndex(ctx, sc, p, now)
		if err != nil {
			return nil, s.unavailable(opList, "listing keys", err)
		}
		recs, err := s.loadRecords(ctx, entries, now)
		if err != nil {
			return nil, err
		}
		list := &KeyList{Data: make([]*APIKey, 0, len(entries)), TotalCount: total}
		var moves []placement
		var stale []string
		for i, e := range entries {
			rec := recs[i]
			switch {
			case rec == nil:
				moves = append(moves, placement{id: e.id, subject: p.Subject, place: placeNone})
				continue
			case e.place == placeValid && rec.key.Revoked:
				moves = append(moves, placementOf(rec.key, now))
			case placeOf(rec.key, now) != e.place:
				stale = append(stale, e.id)
			}
			if p.IncludeInvalid || placeOf(rec.key, now) == placeValid {
				list.Data = append(list.Data, rec.key)
			}
		}
		if len(stale) > 0 {
			s.journalStale(ctx, stale, now)
		}
		if len(moves) == 0 || attempt == listAttempts {
			return list, nil
		}
		if err := s.placeAll(ctx, moves, "", nil); err != nil {
			return nil, s.unavailable(opList, "correcting the listing indexes", err)
		}
	}
}

// readIndex runs listScript until its sweep is done, and returns the
// scope's count and the page's entries.
func (s *Store) readIndex(ctx context.Context, sc scope, p ListParams, now time.Time) (int, []indexEntry, error) {
	withInvalid := ""
	if p.IncludeInvalid {
		withInvalid = "1"
	}
	for {
		reply, err := listScript.Run(ctx, s.rdb, sc.keys(), now.UnixMilli(), p.Offset, p.Limit, sweepBatch, withInvalid).Slice()
		if err != nil {
			return 0, nil, err
		}
		if n, ok := reply[0].(int64); ok && n == -1 {
			continue // more expired keys to move
		}
		if len(reply) != 2 {
			return 0, nil, fmt.Errorf("listing script replied %v", reply)
		}
		total, _ := reply[0].(int64)
		flat, _ := reply[1].([]any)
		entries := make([]indexEntry, 0, len(flat)/3)
		for i := 0; i+2 < len(flat); i += 3 {
			id, _ := flat[i].(string)
			score, _ := flat[i+1].(string)
			from, _ := flat[i+2].(string)
			created, _ := strconv.ParseFloat(score, 64)
			entries = append(entries, indexEntry{id: id, createdAt: int64(created), place: place(from)})
		}
		return int(total), entries, nil
	}
}

// loadRecords reads the records of entries in one round trip, in order:
// nil where a record is gone.
func (s *Store) loadRecords(ctx context.Context, entries []indexEntry, now time.Time) ([]*record, error) {
	cmds := make([]*redis.MapStringStringCmd, len(entries))
	if len(entries) > 0 {
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, e := range entries {
				cmds[i] = p.HGetAll(ctx, s.names.record(e.id))
			}
			return nil
		}); err != nil {
			return nil, s.unavailable(opList, "loading keys", err)
		}
	}
	recs := make([]*record, len(entries))
	for i, e := range entries {
		if rec, ok := decodeRecord(e.id, cmds[i].Val(), now); ok {
			recs[i] = rec
		}
	}
	return recs, nil
}

// journalStale adds ids to the journal, unless a change already has them
// there, so that a repair re-derives their indexes from their records once
// journalGrace has passed. A failure is only logged: the listing stands.
func (s *Store) journalStale(ctx context.Context, ids []string, now time.Time) {
	zs := make([]redis.Z, len(ids))
	for i, id := range ids {
		zs[i] = redis.Z{Score: float64(now.UnixMilli()), Member: id}
	}
	if err := s.rdb.ZAddNX(ctx, s.names.journal(), zs...).Err(); err != nil {
		s.opts.Logger.Warn("journaling index entries their records contradict", "err", err)
	}
}

// searchBatch is how many keys a query reads the names of per round trip.
const searchBatch = 1000

// search serves a listing with a query: it walks the scope's valid index
// (and its invalid one, with IncludeInvalid) newest first, reads the name
// and state of searchBatch keys per round trip, and loads the records of
// the matches on the page.
func (s *Store) search(ctx context.Context, sc scope, p ListParams, now time.Time) (*KeyList, error) {
	query := strings.ToLower(p.Query)
	keys := []string{sc.valid}
	if p.IncludeInvalid {
		keys = append(keys, sc.invalid)
	}
	w := newWalker(s.rdb, keys)
	list := &KeyList{Data: []*APIKey{}}
	var page []indexEntry
	for {
		ids, err := w.next(ctx, searchBatch)
		if err != nil {
			return nil, s.unavailable(opList, "listing keys", err)
		}
		if len(ids) == 0 {
			break
		}
		cmds := make([]*redis.SliceCmd, len(ids))
		if _, err := s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = pipe.HMGet(ctx, s.names.record(id), fName, fRevoked, fExpiration, fDeleted, fDisabled)
			}
			return nil
		}); err != nil {
			return nil, s.unavailable(opList, "loading key names", err)
		}
		for i, id := range ids {
			v := cmds[i].Val()
			name, ok := v[0].(string)
			if !ok || v[3] != nil {
				continue // no record, or a tombstone
			}
			if !p.IncludeInvalid {
				exp, hasExp := v[2].(string)
				if v[1] == "1" || v[4] == "1" || hasExp && parseMillis(exp) <= now.UnixMilli() {
					continue
				}
			}
			if !strings.Contains(strings.ToLower(name), query) {
				continue
			}
			if list.TotalCount >= p.Offset && len(page) < p.Limit {
				page = append(page, indexEntry{id: id})
			}
			list.TotalCount++
		}
	}
	recs, err := s.loadRecords(ctx, page, now)
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		if rec != nil {
			list.Data = append(list.Data, rec.key)
		}
	}
	return list, nil
}

// walker reads sorted sets together, newest first (score, then member,
// descending, as one sorted set would order them), searchBatch entries of
// each per round trip.
type walker struct {
	rdb   redis.UniversalClient
	keys  []string
	ranks []int64     // rank of the next entry to read, per set
	bufs  [][]redis.Z // read and not yet returned, per set
	ended []bool
}

func newWalker(rdb redis.UniversalClient, keys []string) *walker {
	return &walker{rdb: rdb, keys: keys, ranks: make([]int64, len(keys)), bufs: make([][]redis.Z, len(keys)), ended: make([]bool, len(keys))}
}

// next returns up to n more members, in order; none once every set is read.
func (w *walker) next(ctx context.Context, n int) ([]string, error) {
	var out []string
	for len(out) < n {
		if err := w.fill(ctx); err != nil {
			return nil, err
		}
		best := -1
		for i, b := range w.bufs {
			if len(b) > 0 && (best < 0 || newer(b[0], w.bufs[best][0])) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		out = append(out, w.bufs[best][0].Member.(string))
		w.bufs[best] = w.bufs[best][1:]
	}
	return out, nil
}

// fill reads the next batch of every set whose buffer is empty, in one
// round trip.
func (w *walker) fill(ctx context.Context) error {
	cmds := make([]*redis.ZSliceCmd, len(w.keys))
	empty := false
	for i := range w.keys {
		empty = empty || len(w.bufs[i]) == 0 && !w.ended[i]
	}
	if !empty {
		return nil
	}
	if _, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, key := range w.keys {
			if len(w.bufs[i]) == 0 && !w.ended[i] {
				cmds[i] = p.ZRevRangeWithScores(ctx, key, w.ranks[i], w.ranks[i]+searchBatch-1)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for i, c := range cmds {
		if c == nil {
			continue
		}
		w.bufs[i] = c.Val()
		w.ranks[i] += int64(len(w.bufs[i]))
		w.ended[i] = len(w.bufs[i]) < searchBatch
	}
	return nil
}

// newer reports whether a comes before b, newest first.
func newer(a, b redis.Z) bool {
	if a.Score != b.Score {
		return a.Score > b.Score
	}
	return a.Member.(string) > b.Member.(string)
}
