package keystore

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Before the layout of index.go, a store kept two indexes without hash
// tags, every key in both, valid or not, scored by created_at:
// <ns>:subject:<subject> and <ns>:keys. [Store.Migrate] moves their keys
// to the current indexes; <ns>:{all}:layout then holds layoutVersion.

// layoutVersion marks a namespace whose indexes are in the current layout.
const layoutVersion = "2"

func (n keyNames) layout() string                   { return n.ns + ":{all}:layout" }
func (n keyNames) migrationLock() string            { return n.ns + ":{all}:migrating" }
func (n keyNames) migratedSubjects() string         { return n.ns + ":{all}:migrated-subjects" }
func (n keyNames) oldAll() string                   { return n.ns + ":keys" }
func (n keyNames) oldSubject(subject string) string { return n.ns + ":subject:" + subject }

// errMigrationPending is why [Store.List] answers [ErrUnavailable] while
// the indexes of an earlier version wait for [Store.Migrate].
var errMigrationPending = errors.New("the listing indexes of an earlier version are being migrated (keygate store migrate)")

// Bounds of a migration.
const (
	migrationBatch   = 1000             // keys read and placed per round of round trips
	migrationLockTTL = 30 * time.Second // renewed every batch
	migrationPoll    = 250 * time.Millisecond
)

// checkLayout answers whether listing may read the current indexes: once
// they are marked current, or when no index of an earlier version is left
// (a new namespace, or a migration past its last key), which it then marks.
func (s *Store) checkLayout(ctx context.Context) error {
	if s.layoutReady.Load() {
		return nil
	}
	current, old, err := s.layoutState(ctx)
	if err != nil {
		return s.unavailable(opList, "reading the index layout", err)
	}
	if !current {
		if old {
			return unavailable("listing keys", errMigrationPending)
		}
		if err := s.rdb.Set(ctx, s.names.layout(), layoutVersion, 0).Err(); err != nil {
			return s.unavailable(opList, "marking the index layout", err)
		}
	}
	s.layoutReady.Store(true)
	return nil
}

// layoutState reports whether the namespace is marked as in the current
// layout, and whether an index of the earlier layout is still there.
func (s *Store) layoutState(ctx context.Context) (current, old bool, err error) {
	var marker *redis.StringCmd
	var exists *redis.IntCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		marker = p.Get(ctx, s.names.layout())
		exists = p.Exists(ctx, s.names.oldAll())
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, false, err
	}
	return marker.Val() == layoutVersion, exists.Val() > 0, nil
}

// Migrate moves the keys of the listing indexes of an earlier version to
// the current ones, and returns how many it moved. It is idempotent, and
// safe to run in several instances at once: one migrates, under a lock in
// Redis that another takes over if its holder stops, and the others wait
// until it is done (or ctx ends). Keys verify, and create, revoke, update
// and delete work, throughout; [Store.List] answers [ErrUnavailable] until
// it is done. A key that an instance of the earlier version indexes after
// a migration is moved by the next one: run it again once the last such
// instance has stopped.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	token, err := randomHex(16)
	if err != nil {
		return 0, err
	}
	for {
		current, old, err := s.layoutState(ctx)
		if err != nil {
			return 0, unavailable("reading the index layout", err)
		}
		if current && !old {
			s.layoutReady.Store(true)
			return 0, nil
		}
		locked, err := s.rdb.SetNX(ctx, s.names.migrationLock(), token, migrationLockTTL).Result()
		if err != nil {
			return 0, unavailable("locking the migration", err)
		}
		if locked {
			n, err := s.migrate(ctx, token)
			if uerr := unlockScript.Run(context.WithoutCancel(ctx), s.rdb, []string{s.names.migrationLock()}, token).Err(); uerr != nil && err == nil {
				s.opts.Logger.Warn("releasing the migration lock; it lapses by itself", "err", uerr)
			}
			return n, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(migrationPoll):
		}
	}
}

// renewScript extends the lock KEYS[1] by ARGV[2] ms if ARGV[1] holds it.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`)

// unlockScript deletes the lock KEYS[1] if ARGV[1] holds it.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// migrate moves the old global index's keys, a batch at a time: each key
// is placed from its record, unless a change of this version has placed
// it already ("nx"), and only then leaves the old index, so that a
// migration cut short loses nothing. The subjects met are kept in Redis,
// so that whoever finishes deletes their old indexes.
func (s *Store) migrate(ctx context.Context, token string) (int, error) {
	moved := 0
	for {
		renewed, err := renewScript.Run(ctx, s.rdb, []string{s.names.migrationLock()}, token, migrationLockTTL.Milliseconds()).Int()
		if err != nil {
			return moved, unavailable("renewing the migration lock", err)
		}
		if renewed == 0 {
			return moved, errors.New("keystore: lost the migration lock: another instance took over")
		}
		ids, err := s.rdb.ZRange(ctx, s.names.oldAll(), 0, migrationBatch-1).Result()
		if err != nil {
			return moved, unavailable("reading the old index", err)
		}
		if len(ids) == 0 {
			break
		}
		n, err := s.migrateBatch(ctx, ids)
		if err != nil {
			return moved, err
		}
		moved += n
	}
	if err := s.dropOldSubjects(ctx); err != nil {
		return moved, err
	}
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, s.names.layout(), layoutVersion, 0)
		p.Del(ctx, s.names.oldAll())
		return nil
	}); err != nil {
		return moved, unavailable("marking the index layout", err)
	}
	s.layoutReady.Store(true)
	return moved, nil
}

// migrateBatch places the keys ids of the old global index and removes
// them from it; it returns how many it placed.
func (s *Store) migrateBatch(ctx context.Context, ids []string) (int, error) {
	now := s.now()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.names.record(id))
		}
		return nil
	}); err != nil {
		return 0, unavailable("loading keys to migrate", err)
	}
	var ps []placement
	subjects := map[string]bool{}
	for i, id := range ids {
		h := cmds[i].Val()
		if sub := h[fSubject]; sub != "" {
			subjects[sub] = true
		}
		if rec, ok := decodeRecord(id, h, now); ok {
			ps = append(ps, placementOf(rec.key, now))
		}
	}
	if len(subjects) > 0 {
		members := make([]any, 0, len(subjects))
		for sub := range subjects {
			members = append(members, sub)
		}
		if err := s.rdb.SAdd(ctx, s.names.migratedSubjects(), members...).Err(); err != nil {
			return 0, unavailable("noting migrated subjects", err)
		}
	}
	if err := s.placeAll(ctx, ps, "nx", nil); err != nil {
		return 0, unavailable("placing migrated keys", err)
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	if err := s.rdb.ZRem(ctx, s.names.oldAll(), members...).Err(); err != nil {
		return 0, unavailable("removing migrated keys from the old index", err)
	}
	return len(ps), nil
}

// dropOldSubjects deletes the old index of every subject a migration met,
// then the list of them.
func (s *Store) dropOldSubjects(ctx context.Context) error {
	var cursor uint64
	for {
		subjects, next, err := s.rdb.SScan(ctx, s.names.migratedSubjects(), cursor, "", migrationBatch).Result()
		if err != nil {
			return unavailable("reading migrated subjects", err)
		}
		if len(subjects) > 0 {
			if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, sub := range subjects {
					p.Unlink(ctx, s.names.oldSubject(sub))
				}
				return nil
			}); err != nil {
				return unavailable("deleting old subject indexes", err)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if err := s.rdb.Del(ctx, s.names.migratedSubjects()).Err(); err != nil {
		return unavailable("deleting the migrated subjects", err)
	}
	return nil
}
