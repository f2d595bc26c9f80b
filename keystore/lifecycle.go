package keystore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The lifecycle of a key beyond create, update, revoke and delete: roll
// and bulk revoke. Both narrow keys, so both go through the invalidation
// protocol (docs/revocation.md); a bulk revoke publishes one invalidation
// for the whole subject, whatever its number of keys.

// DefaultRollGrace is how long a rolled key keeps verifying when the
// caller does not say.
const DefaultRollGrace = 24 * time.Hour

// rollScript rolls the record KEYS[1] to the successor ARGV[2] at ARGV[1]
// (Unix ms): it links the two, caps the expiration at ARGV[3] (or, when
// ARGV[3] is "", revokes the key with the reason ARGV[5]), makes the
// successor meter it when ARGV[4] is "1", and takes its credits, which it
// returns (-1 for none), followed by the record as HGETALL reads it (for
// the listing indexes). It returns {-1} for no key and {-2} for a key
// revoked or rolled already.
var rollScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'x') == 1 then return {-1, 0} end
if redis.call('HGET', KEYS[1], 'r') == '1' or redis.call('HEXISTS', KEYS[1], 'rt') == 1 then return {-2, 0} end
redis.call('HSET', KEYS[1], 'rt', ARGV[2], 'ua', ARGV[1])
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'r', '1', 'rr', ARGV[5])
else
  local e = redis.call('HGET', KEYS[1], 'e')
  if not e or tonumber(e) > tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'e', ARGV[3]) end
end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'mv', ARGV[2]) end
local credits = redis.call('HGET', KEYS[1], 'cr')
if credits then redis.call('HSET', KEYS[1], 'cr', '0') end
local out = {0, tonumber(credits or '-1')}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = v end
return out
`)

// Roll replaces the key id with a new one and returns the new key with its
// secret, shown this once. The new key copies the old one's name, subject,
// description, claims, scopes, type, expiration, enabled state, rate limits
// (with their state, so that a roll grants no new burst), allowed CIDRs
// and credits; rolled_from and rolled_to link the two. The old key keeps
// verifying for grace: its expiration becomes the earlier of its own and
// now + grace. A grace of 0 revokes it at once.
//
// The credits move: the new key holds the balance, and for the rest of
// its grace the old key spends from it and counts against the new key's
// rate limits, so that the two are metered as the one client they are.
// The old key's own balance reads 0.
//
// Like [Store.Revoke], it returns once no [Verifier] can admit the old
// key beyond its new state. It reports [ErrNotFound], or a
// [*ValidationError] for a grace out of range or a key that is revoked,
// expired or rolled already. On [ErrInvalidationUnconfirmed] the roll is
// stored but the new key's secret is not shown: roll the new key (its ID
// is the old key's rolled_to) to get one.
func (s *Store) Roll(ctx context.Context, id string, grace time.Duration) (*APIKey, error) {
	if grace < 0 || grace > MaxSecondsUntilExpiration*time.Second {
		return nil, invalid("expires_in_seconds", "must be between 0 (revoke the old key now) and %d", MaxSecondsUntilExpiration)
	}
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	now := s.now()
	h, err := s.rdb.HGetAll(ctx, s.names.record(id)).Result()
	if err != nil {
		return nil, s.unavailable(opRoll, "loading key "+id, err)
	}
	rec, ok := decodeRecord(id, h, now)
	if !ok {
		return nil, ErrNotFound
	}
	old := rec.key
	switch {
	case old.Revoked:
		return nil, invalid("id", "is a revoked key: there is nothing to roll")
	case old.Expired:
		return nil, invalid("id", "is an expired key: there is nothing to roll")
	case old.RolledTo != nil:
		return nil, invalid("id", "was rolled already, to %s: roll that key", *old.RolledTo)
	}

	// The successor, with no credits until the old key's are moved.
	k, err := s.newKey(CreateParams{
		Name: old.Name, Subject: old.Subject, Description: old.Description, Claims: old.Claims,
		Scopes: old.Scopes, RateLimits: old.RateLimits, AllowedCIDRs: old.AllowedCIDRs, Enabled: &old.Enabled,
	})
	if err != nil {
		return nil, err
	}
	k.Type, k.Expiration, k.RolledFrom = old.Type, old.Expiration, &old.ID
	if c := old.Credits; c != nil {
		moved := Credits{Refill: c.Refill, LastRefillAt: c.LastRefillAt}
		if moved.LastRefillAt == nil && c.Refill != nil {
			// The old key's next refill is due from its creation on.
			moved.LastRefillAt = &old.CreatedAt
		}
		k.Credits = &moved
	}
	var tats []any
	for f, v := range h {
		if strings.HasPrefix(f, tatPrefix) {
			tats = append(tats, f, v)
		}
	}
	secret, err := newSecret(s.opts.KeyPrefix, k.ID)
	if err != nil {
		return nil, err
	}
	digest := s.digests.current.sum(secret)
	if err := s.add(ctx, opRoll, &record{key: k, digest: string(digest[:]), hashKey: s.digests.currentID}, tats...); err != nil {
		return nil, err
	}

	capAt := "" // revoke now
	if grace > 0 {
		capAt = strconv.FormatInt(now.Add(grace).UnixMilli(), 10)
	}
	meterVia := "0"
	if rec.limited(old) {
		meterVia = "1"
	}
	err = s.change(ctx, id, opRoll, "rolling key "+id, func() error {
		// The old key's new expiration (or revocation) may move it
		// between the listing indexes: journal, record, indexes.
		var moved int64
		err := s.reindexing(ctx, id, opRoll, func() (placement, error) {
			reply, err := rollScript.Run(ctx, s.writer(), []string{s.names.record(id)},
				now.UnixMilli(), k.ID, capAt, meterVia, "rolled to "+k.ID).Slice()
			var status int64
			if err == nil && len(reply) >= 2 {
				status, _ = reply[0].(int64)
				moved, _ = reply[1].(int64)
			}
			if err != nil || len(reply) < 2 {
				return placement{}, s.unavailable(opRoll, "rolling key "+id, errors.Join(err, errors.New("unexpected reply")))
			}
			switch status {
			case -1:
				return placement{}, ErrNotFound
			case -2:
				return placement{}, invalid("id", "was revoked or rolled while it was being rolled")
			}
			rec, ok := decodeRecord(id, hashFromReply(reply[2:]), s.now())
			if !ok {
				return placement{}, ErrNotFound
			}
			return placementOf(rec.key, s.now()), nil
		})
		if err != nil {
			return err
		}
		if moved > 0 {
			// The new key is unknown to anyone yet: nothing spent from it.
			if err := s.rdb.HIncrBy(ctx, s.names.record(k.ID), fCredits, moved).Err(); err != nil {
				s.opts.Logger.Error("moving the credits of a rolled key: set them on its successor by hand",
					"from", id, "to", k.ID, "credits", moved, "err", err)
				return s.unavailable(opRoll, "moving the credits of key "+id, err)
			}
			k.Credits.Remaining = moved
		}
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrInvalidationUnconfirmed) {
			s.discard(ctx, k) // the old key was not rolled
		}
		return nil, err
	}
	out := *k
	out.Expired = k.ExpiredAt(now)
	out.Secret = secret
	return &out, nil
}

// revokeOfSubjectScript revokes the record KEYS[1] at ARGV[1] if it is a
// key of the subject ARGV[4] and not revoked yet, with the reason ARGV[3]
// when ARGV[2] is "1". It returns the key's created_at (for the listing
// indexes) when it revoked the key, and 0 otherwise.
var revokeOfSubjectScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 's') ~= ARGV[4] or redis.call('HEXISTS', KEYS[1], 'x') == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'r') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'r', '1', 'ua', ARGV[1])
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'rr', ARGV[3]) end
return {tonumber(redis.call('HGET', KEYS[1], 'ca') or '0')}
`)

// revokeBatch is how many revocations a bulk revoke sends per pipeline.
const revokeBatch = 1000

// RevokeAll revokes every key of subject, with an optional reason, and
// returns how many keys it revoked (keys revoked already keep their reason
// and are not counted; a repeated call revokes none and publishes again).
// The revocations go in pipelines, and one invalidation covers them all:
// like [Store.Revoke], it returns once no [Verifier] can admit any of the
// keys, at the cost of one revoke's wait. Keys created while it runs may
// escape it.
func (s *Store) RevokeAll(ctx context.Context, subject string, reason *string) (int, error) {
	if err := checkText("subject", subject, MaxSubjectLen, true); err != nil {
		return 0, err
	}
	hasReason, text := "0", ""
	if reason != nil && *reason != "" {
		if err := checkText("revocation_reason", *reason, MaxDescriptionLen, false); err != nil {
			return 0, err
		}
		hasReason, text = "1", *reason
	}
	revoked := 0
	t := invTarget{head: targetSubject, subject: subject}
	err := s.changeOf(ctx, t, opRevoke, "revoking the keys of a subject", func() error {
		// Every key of the subject, valid or not (an expired or disabled
		// key is revoked too), from its scope's indexes: one slot.
		sc := s.names.subjectScope(subject)
		var valid, other *redis.StringSliceCmd
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			valid = p.ZRange(ctx, sc.valid, 0, -1)
			other = p.ZRange(ctx, sc.invalid, 0, -1)
			return nil
		}); err != nil {
			return s.unavailable(opRevoke, "listing the keys of a subject", err)
		}
		ids := append(valid.Val(), other.Val()...)
		if len(ids) > 0 {
			if err := revokeOfSubjectScript.Load(ctx, s.rdb).Err(); err != nil {
				return s.unavailable(opRevoke, "revoking the keys of a subject", err)
			}
		}
		now := s.now().UnixMilli()
		for start := 0; start < len(ids); start += revokeBatch {
			n, err := s.revokeEach(ctx, ids[start:min(start+revokeBatch, len(ids))], now, hasReason, text, subject)
			revoked += n
			if err != nil {
				return s.unavailable(opRevoke, "revoking the keys of a subject", err)
			}
		}
		return nil
	})
	return revoked, err
}

// revokeEach revokes the keys ids of subject in one pipeline and returns
// how many it revoked. With [Options.ReplicaWait] on a single server or
// Sentinel, the pipeline ends with WAIT 1 on its connection.
//
// The listing indexes follow the order of every change that moves keys
// (index.go): the keys are journaled first, in one step, then revoked,
// then moved to the invalid indexes (the subject's scope, then the global
// one, which clears their journal entries). A failure after the journal
// leaves the entries for a listing to repair.
func (s *Store) revokeEach(ctx context.Context, ids []string, now int64, hasReason, text, subject string) (int, error) {
	journal := make([]redis.Z, len(ids))
	journaled := make(map[string]int64, len(ids))
	for i, id := range ids {
		journal[i] = redis.Z{Score: float64(now), Member: id}
		journaled[id] = now
	}
	if err := s.rdb.ZAdd(ctx, s.names.journal(), journal...).Err(); err != nil {
		return 0, err
	}
	n, created, err := s.revokeRecords(ctx, ids, now, hasReason, text, subject)
	if err != nil {
		return n, err
	}
	ps := make([]placement, len(ids))
	for i, id := range ids {
		if c, ok := created[id]; ok {
			ps[i] = placement{id: id, subject: subject, place: placeInvalid, createdAt: c}
		} else {
			// Revoked already, or not a key of subject: nothing moved; the
			// global step only clears the journal entry.
			ps[i] = placement{id: id}
		}
	}
	if err := s.placeAll(ctx, ps, "", journaled); err != nil {
		s.metrics.errors.WithLabelValues(opRevoke).Inc()
		s.refreshTopology(err)
		s.opts.Logger.Warn("updating the listing indexes; a listing repairs them within "+journalGrace.String(), "subject", subject, "err", err)
	}
	return n, nil
}

// revokeRecords revokes the records of revokeEach and returns how many it
// revoked, with the created_at of each.
func (s *Store) revokeRecords(ctx context.Context, ids []string, now int64, hasReason, text, subject string) (int, map[string]int64, error) {
	created := make(map[string]int64, len(ids))
	cmds := make([]*redis.Cmd, len(ids))
	var wait *redis.Cmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = revokeOfSubjectScript.EvalSha(ctx, p, []string{s.names.record(id)}, now, hasReason, text, subject)
		}
		if _, single := s.rdb.(*redis.Client); single && s.opts.ReplicaWait > 0 {
			wait = p.Do(ctx, "wait", 1, max(s.opts.ReplicaWait, time.Millisecond).Milliseconds())
		}
		return nil
	})
	n := 0
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			// A failover to a replica that has not seen the script.
			cmd = revokeOfSubjectScript.Run(ctx, s.rdb, []string{s.names.record(ids[i])}, now, hasReason, text, subject)
		}
		r, err := cmd.Result()
		if err != nil {
			return n, created, err
		}
		if a, ok := r.([]any); ok && len(a) == 1 {
			c, _ := a[0].(int64)
			created[ids[i]] = c
			n++
		}
	}
	if wait != nil {
		if got, err := wait.Int64(); err != nil || got < 1 {
			s.unreplicated(s.names.record(ids[len(ids)-1]), s.opts.ReplicaWait, err)
		}
	}
	return n, created, nil
}
