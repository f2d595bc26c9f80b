package keystore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The indexes listing reads (README.md beside this file has the layout,
// and why it is safe on Redis Cluster).
//
// Each scope, one subject or every subject, has three sorted sets under one
// hash tag, so that one script can move a key between them:
//
//	valid    keys neither revoked, disabled nor expired, scored by created_at
//	invalid  revoked, disabled and expired keys, scored by created_at
//	expiry   the keys of valid that have an expiration, scored by it
//
// The default listing is then a range of valid, and its count a ZCARD. A
// key that expires stays in valid until a listing of its scope moves it
// (listScript): the expiry index names the keys that are due, so each costs
// one step, once.
//
// A key's record and its scopes' indexes live on different slots, so no
// step changes them together. A change that moves a key between indexes
// (create, import, roll, revoke, bulk revoke, enable or disable, delete, a
// new expiration) therefore first adds the key
// to a journal, then writes the record, then the subject's indexes, then
// the global ones together with the removal of its journal entry. A change
// cut short anywhere leaves its journal entry, and any listing repairs the
// entries older than journalGrace from their records (repairJournal).

// scope names the index sorted sets of one subject, or of every subject.
type scope struct {
	valid, invalid, expiry string
}

func (s scope) keys() []string { return []string{s.valid, s.invalid, s.expiry} }

// subjectScope is the scope of one subject's keys, under the hash tag of
// the subject.
func (n keyNames) subjectScope(subject string) scope {
	p := n.ns + ":sub:{" + subject + "}:"
	return scope{valid: p + "valid", invalid: p + "invalid", expiry: p + "expiry"}
}

// allScope is the scope of every key. The journal and the layout marker
// share its hash tag: the script that updates the global indexes also
// clears the journal entry.
func (n keyNames) allScope() scope {
	p := n.ns + ":{all}:"
	return scope{valid: p + "valid", invalid: p + "invalid", expiry: p + "expiry"}
}

// journal is the sorted set of key IDs whose indexes a change is updating,
// scored by when it began (Unix ms).
func (n keyNames) journal() string { return n.ns + ":{all}:changing" }

// place is where a key belongs in the indexes of its scopes.
type place string

const (
	placeValid   place = "v" // valid, and in expiry when it has an expiration
	placeInvalid place = "i" // revoked, disabled or expired
	placeNone    place = "-" // deleted, or no record: in no index
)

// placeOf is where k belongs at now. A disabled key is invalid, like a
// revoked one: verifiers refuse it.
func placeOf(k *APIKey, now time.Time) place {
	if k.Revoked || !k.Enabled || k.ExpiredAt(now) {
		return placeInvalid
	}
	return placeValid
}

// journalGrace is how old a journal entry must be before a listing
// repairs it: younger ones belong to changes still in progress.
const journalGrace = time.Minute

// placeScript puts one key where it belongs in one scope. KEYS are the
// scope's valid, invalid and expiry sets, and for the global scope the
// journal. ARGV: the ID, the place, created_at, the expiration ("" for
// none), "nx" to leave a key that is already in valid or invalid alone (the
// migration, which must not undo a newer change), and the journal score to
// clear ("" for none): the entry is removed only if no later change
// journaled the key again since.
var placeScript = redis.NewScript(`
local id, place = ARGV[1], ARGV[2]
if ARGV[5] == 'nx' and (redis.call('ZSCORE', KEYS[1], id) or redis.call('ZSCORE', KEYS[2], id)) then
  place = ''
end
if place == 'v' then
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  redis.call('ZREM', KEYS[2], id)
  if ARGV[4] == '' then redis.call('ZREM', KEYS[3], id) else redis.call('ZADD', KEYS[3], ARGV[4], id) end
elseif place == 'i' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
elseif place == '-' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
if KEYS[4] and ARGV[6] ~= '' then
  local at = redis.call('ZSCORE', KEYS[4], id)
  if at and tonumber(at) == tonumber(ARGV[6]) then redis.call('ZREM', KEYS[4], id) end
end
return 1
`)

// placement is one key's place, as placeScript takes it.
type placement struct {
	id, subject string
	place       place
	createdAt   int64
	expiration  *int64
}

// placementOf is where k belongs at now.
func placementOf(k *APIKey, now time.Time) placement {
	return placement{id: k.ID, subject: k.Subject, place: placeOf(k, now), createdAt: k.CreatedAt, expiration: k.Expiration}
}

func (p placement) args(mode string, journaled int64) []any {
	exp, at := "", ""
	if p.expiration != nil {
		exp = strconv.FormatInt(*p.expiration, 10)
	}
	if journaled != 0 {
		at = strconv.FormatInt(journaled, 10)
	}
	return []any{p.id, string(p.place), p.createdAt, exp, mode, at}
}

// beginChange journals id before a change that may move it between
// indexes, and returns the entry's score for [Store.index].
func (s *Store) beginChange(ctx context.Context, id string) (int64, error) {
	at := s.now().UnixMilli()
	if err := s.rdb.ZAdd(ctx, s.names.journal(), redis.Z{Score: float64(at), Member: id}).Err(); err != nil {
		return 0, err
	}
	return at, nil
}

// reindexing runs write, a change to the record of id that may move the
// key between indexes, after journaling the key, and then puts the key
// where write says it now belongs. A write that found no key clears the
// journal entry; one that may or may not have happened leaves it, for a
// repair.
func (s *Store) reindexing(ctx context.Context, id, op string, write func() (placement, error)) error {
	journaled, err := s.beginChange(ctx, id)
	if err != nil {
		return s.unavailable(op, "journaling key "+id, err)
	}
	p, err := write()
	switch {
	case err == nil:
		s.indexAfter(ctx, op, p, journaled)
	case !errors.Is(err, ErrUnavailable):
		s.endChange(ctx, id, journaled)
	}
	return err
}

// endChange clears the journal entry of a change that changed nothing. A
// failure leaves the entry to a repair.
func (s *Store) endChange(ctx context.Context, id string, journaled int64) {
	keys := append(s.names.allScope().keys(), s.names.journal())
	placeScript.Run(ctx, s.rdb, keys, id, "", 0, "", "", journaled)
}

// index puts a key where it belongs, its subject's scope first and the
// global one last, and then clears its journal entry if journaled (the
// score beginChange returned) is not 0. On failure the journal entry stays,
// for a listing to repair; the change itself is done, so callers log the
// error and succeed.
func (s *Store) index(ctx context.Context, p placement, journaled int64) error {
	sub := s.names.subjectScope(p.subject)
	if err := placeScript.Run(ctx, s.rdb, sub.keys(), p.args("", 0)...).Err(); err != nil {
		return err
	}
	all := s.names.allScope()
	return placeScript.Run(ctx, s.rdb, append(all.keys(), s.names.journal()), p.args("", journaled)...).Err()
}

// indexAfter is [Store.index] for a change that has happened: a failure is
// logged and counted, and left to the journal.
func (s *Store) indexAfter(ctx context.Context, op string, p placement, journaled int64) {
	if err := s.index(ctx, p, journaled); err != nil {
		s.metrics.errors.WithLabelValues(op).Inc()
		s.refreshTopology(err)
		s.opts.Logger.Warn("updating the listing indexes; a listing repairs them within "+journalGrace.String(), "id", p.id, "err", err)
	}
}

// placeAll puts many keys where they belong in one pipeline per kind of
// scope: every subject scope first, then the global one (clearing journal
// entries where journaled holds their scores). mode is "" or "nx".
func (s *Store) placeAll(ctx context.Context, ps []placement, mode string, journaled map[string]int64) error {
	if len(ps) == 0 {
		return nil
	}
	if err := s.runScripts(ctx, func(p redis.Pipeliner, run scriptRunner) {
		for _, pl := range ps {
			if pl.subject != "" {
				run(p, placeScript, s.names.subjectScope(pl.subject).keys(), pl.args(mode, 0)...)
			}
		}
	}); err != nil {
		return err
	}
	global := append(s.names.allScope().keys(), s.names.journal())
	return s.runScripts(ctx, func(p redis.Pipeliner, run scriptRunner) {
		for _, pl := range ps {
			run(p, placeScript, global, pl.args(mode, journaled[pl.id])...)
		}
	})
}

// scriptRunner queues a script on a pipeline.
type scriptRunner func(p redis.Pipeliner, script *redis.Script, keys []string, args ...any) *redis.Cmd

// runScripts runs the scripts fill queues in one pipeline, by SHA, and
// once more by their text if a server did not know one of them (NOSCRIPT).
// Every script queued this way must be safe to run twice.
func (s *Store) runScripts(ctx context.Context, fill func(p redis.Pipeliner, run scriptRunner)) error {
	bySHA := func(p redis.Pipeliner, script *redis.Script, keys []string, args ...any) *redis.Cmd {
		return script.EvalSha(ctx, p, keys, args...)
	}
	byText := func(p redis.Pipeliner, script *redis.Script, keys []string, args ...any) *redis.Cmd {
		return script.Eval(ctx, p, keys, args...)
	}
	cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { fill(p, bySHA); return nil })
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { fill(p, byText); return nil })
			break
		}
	}
	return err
}

// journalBatch is how many due journal entries a repair reads at once.
const journalBatch = 100

// repairJournal re-derives from their records the indexes of the keys
// whose changes were cut short: journal entries older than journalGrace.
// It reports how many it repaired.
func (s *Store) repairJournal(ctx context.Context, now time.Time) (int, error) {
	repaired := 0
	cutoff := strconv.FormatInt(now.Add(-journalGrace).UnixMilli(), 10)
	for {
		due, err := s.rdb.ZRangeByScoreWithScores(ctx, s.names.journal(), &redis.ZRangeBy{Min: "-inf", Max: cutoff, Count: journalBatch}).Result()
		if err != nil || len(due) == 0 {
			return repaired, err
		}
		if err := s.repair(ctx, due, now); err != nil {
			return repaired, err
		}
		repaired += len(due)
		if len(due) < journalBatch {
			return repaired, nil
		}
	}
}

// repair places the journaled keys of entries as their records say, and
// clears the entries.
func (s *Store) repair(ctx context.Context, entries []redis.Z, now time.Time) error {
	cmds := make([]*redis.MapStringStringCmd, len(entries))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range entries {
			cmds[i] = p.HGetAll(ctx, s.names.record(e.Member.(string)))
		}
		return nil
	}); err != nil {
		return err
	}
	ps := make([]placement, len(entries))
	journaled := make(map[string]int64, len(entries))
	for i, e := range entries {
		id := e.Member.(string)
		journaled[id] = int64(e.Score)
		h := cmds[i].Val()
		if rec, ok := decodeRecord(id, h, now); ok {
			ps[i] = placementOf(rec.key, now)
		} else {
			// Deleted: a tombstone still names the subject. Without one
			// the subject's entries are left to its listings.
			ps[i] = placement{id: id, subject: h[fSubject], place: placeNone}
		}
	}
	return s.placeAll(ctx, ps, "", journaled)
}
