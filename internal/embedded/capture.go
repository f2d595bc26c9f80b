package embedded

import (
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2/server"
)

// How a write reaches the log:
//
//  1. The engine calls [Store.preHook] before every command it runs, the
//     calls of Lua scripts and the commands queued in a MULTI included. For
//     a command that may write, the hook notes the keys (and, for ZADD,
//     HSET, SADD and their kin, the members) it names: they are dirty.
//  2. Every command that may write runs under the store's write lock (see
//     hook.go), so the dirty keys are those of the one command running.
//     Once its reply is in, still under the lock, [Store.capture] reads what
//     each dirty key holds now and appends one record per key to the log.
//  3. After the lock is released, the caller waits until the log has been
//     synced to disk (group commit), and only then sees the reply.
//
// The log thus holds, in the order the commands ran, the state each one
// left: replaying it rebuilds the data set as it was after some command,
// never in the middle of one.

// dirty are the keys changed by the command that holds the write lock.
type dirty struct {
	mu   sync.Mutex
	keys map[string]*dirtyKey
	all  string // a command that changes keys it does not name: log everything
}

type dirtyKey struct {
	whole   bool
	from    *expiry // RENAME, COPY: the source's expiry, which the key may have taken
	kind    byte    // member-level kind, when not whole
	members map[string]struct{}
}

// mark notes that a command changed key: its TTL (kind kindTTL), some of
// its members (kind kindZSet, kindHash or kindSet, with members), or all of
// it (kind 0). from is the expiry of the key a RENAME or COPY copies.
func (d *dirty) mark(key string, kind byte, members []string, from *expiry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.keys == nil {
		d.keys = map[string]*dirtyKey{}
	}
	k := d.keys[key]
	if k == nil {
		k = &dirtyKey{}
		d.keys[key] = k
	}
	if from != nil {
		k.from = from
	}
	switch {
	case k.whole || kind == kindTTL:
	case kind == 0 || members == nil || (k.kind != 0 && k.kind != kind):
		k.whole, k.kind, k.members = true, 0, nil
	default:
		k.kind = kind
		if k.members == nil {
			k.members = map[string]struct{}{}
		}
		for _, m := range members {
			k.members[m] = struct{}{}
		}
	}
}

func (d *dirty) markAll(why string) {
	d.mu.Lock()
	if d.all == "" {
		d.all = why
	}
	d.mu.Unlock()
}

// take returns the dirty keys and forgets them.
func (d *dirty) take() (map[string]*dirtyKey, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys, all := d.keys, d.all
	d.keys, d.all = nil, ""
	return keys, all
}

// preHook runs in the engine before each command; returning true means it
// answered the command itself (a refusal).
func (s *Store) preHook(c *server.Peer, cmd string, args ...string) bool {
	if ttlReads[cmd] && len(args) == 1 && c != s.writeConn.peer && c != s.compactConn.peer {
		return s.answerTTL(c, cmd, args[0])
	}
	sp := commands[cmd]
	if sp == nil {
		if !readOnly[cmd] {
			s.dirty.markAll(cmd)
		}
		return false
	}
	if sp.all {
		if err := s.wal.failed(); err != nil {
			c.WriteError("ERR embedded store: " + err.Error())
			return true
		}
		s.dirty.markAll(cmd)
		return false
	}
	keys := sp.keys(args)
	durable := slices.IndexFunc(keys, s.durable) >= 0
	if sp.refuse != nil && (durable || len(keys) == 0) {
		if why := sp.refuse(args); why != "" {
			c.WriteError("ERR " + strings.ToUpper(cmd[:1]) + strings.ToLower(cmd[1:]) + ": " + why + "; configure a Redis server (KEYGATE_REDIS_URL)")
			return true
		}
	}
	if durable {
		if err := s.wal.failed(); err != nil {
			c.WriteError("ERR embedded store: " + err.Error())
			return true
		}
	}
	ttl := sp.ttl != nil && sp.ttl(args)
	kind := sp.kind
	var members []string
	if sp.members != nil {
		members = sp.members(args)
	}
	var from *expiry
	if sp.copiesTTL && len(keys) == 2 {
		if x, ok := s.exp.get(keys[0]); ok {
			from = &x
		}
	}
	for i, k := range keys {
		var f *expiry
		if i == 1 {
			f = from
		}
		if !s.durable(k) {
			if ttl {
				// Not logged, but its expiry is kept, so that it expires.
				s.dirty.mark(k, kindTTL, nil, f)
			}
			continue
		}
		s.dirty.mark(k, kind, members, f)
	}
	return false
}

// ttlReads are the commands answered from the store's expiries.
var ttlReads = set("TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME")

// answerTTL answers a TTL read of a durable key from the store's
// expiries: the engine's own TTL does not count down. Other keys (no TTL,
// ephemeral) are left to the engine.
func (s *Store) answerTTL(c *server.Peer, cmd, key string) bool {
	x, ok := s.exp.get(key)
	if !ok || !s.durable(key) {
		return false
	}
	left := x.at - s.now().UnixMilli()
	switch {
	case left <= 0:
		c.WriteInt(-2) // expired: gone within a second
	case cmd == "PTTL":
		c.WriteInt(int(left))
	case cmd == "TTL":
		c.WriteInt(int((left + 500) / 1000))
	case cmd == "PEXPIRETIME":
		c.WriteInt(int(x.at))
	default:
		c.WriteInt(int(x.at / 1000))
	}
	return true
}

func (s *Store) durable(key string) bool { return !s.opts.Ephemeral(key) }

// capture reads what the dirty keys hold now and appends it to the log; it
// returns the sequence number to commit, 0 when nothing durable changed.
// The caller holds the write lock.
func (s *Store) capture() (uint64, error) {
	keys, all := s.dirty.take()
	if all != "" {
		return s.captureAll(all)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	var payload []byte
	for _, k := range names {
		var err error
		if payload, err = s.captureKey(payload, k, keys[k]); err != nil {
			return 0, err
		}
	}
	if len(payload) == 0 {
		return 0, nil
	}
	return s.wal.append(payload), nil
}

func (s *Store) captureKey(payload []byte, key string, d *dirtyKey) ([]byte, error) {
	c := s.writeConn
	exists, expireAt, ttlChanged := s.reconcileTTL(key, d.from)
	if !s.durable(key) {
		return payload, nil
	}
	if !exists {
		return appendDel(payload, key), nil
	}
	if d.whole {
		v, ok, err := s.read(c, key)
		if err != nil {
			return payload, err
		}
		if !ok {
			return appendDel(payload, key), nil
		}
		v.expireAt = expireAt
		return appendPut(payload, key, v), nil
	}
	if d.kind != 0 && d.kind != kindTTL {
		names := make([]string, 0, len(d.members))
		for m := range d.members {
			names = append(names, m)
		}
		slices.Sort(names)
		changes, err := c.members(d.kind, key, names)
		if isWrongType(err) {
			// The command failed on a key of another type; log the key as
			// it is.
			return s.captureKey(payload, key, &dirtyKey{whole: true})
		}
		if err != nil {
			return payload, err
		}
		payload = appendMembers(payload, d.kind, key, changes)
	}
	if ttlChanged {
		payload = appendExpire(payload, key, expireAt)
	}
	return payload, nil
}

// reconcileTTL brings the key's expiry up to date after a command changed
// the key, and reports whether the key exists, its expiry (0: none) and
// whether that changed. from is the expiry of the key a RENAME or COPY
// took it from.
//
// The engine holding the key's tag means that no command set the TTL;
// holding from's tag, that the key took its source's; anything else, that
// a command just set it, relative to now.
func (s *Store) reconcileTTL(key string, from *expiry) (exists bool, at int64, changed bool) {
	old, had := s.exp.get(key)
	var d time.Duration
	if exists = s.mr.Exists(key); exists {
		d = s.mr.TTL(key)
	}
	if d == 0 {
		s.exp.forget(key)
		return exists, 0, had
	}
	switch {
	case had && d == old.tag:
		return true, old.at, false
	case from != nil && d == from.tag:
		at = from.at
	default:
		at = s.now().UnixMilli() + d.Milliseconds()
	}
	s.setExpiry(key, at)
	return true, at, !had || at != old.at
}

// setExpiry gives an existing key the expiry at: in the engine, a TTL of
// what is left, tagged.
func (s *Store) setExpiry(key string, at int64) {
	left := max(time.Duration(at-s.now().UnixMilli())*time.Millisecond, time.Millisecond)
	tag := left + time.Duration(1+rand.IntN(int(time.Millisecond)-1))
	s.mr.SetTTL(key, tag)
	s.exp.set(key, expiry{at: at, tag: tag})
}

// captureAll logs the whole data set, after a command that may have changed
// keys it did not name. The log then holds a reset record and a put for
// every durable key, in one batch.
func (s *Store) captureAll(why string) (uint64, error) {
	s.opts.Logger.Warn("embedded store: logging the whole data set after a command that may change any key", "command", why)
	payload := []byte{recReset}
	keys := s.mr.Keys()
	now := s.now().UnixMilli()
	present := make(map[string]bool, len(keys))
	for _, k := range keys {
		present[k] = true
	}
	s.exp.retain(present)
	for _, k := range keys {
		_, at, _ := s.reconcileTTL(k, nil)
		if !s.durable(k) {
			continue
		}
		v, ok, err := s.read(s.writeConn, k)
		if err != nil {
			return 0, err
		}
		if ok && (at == 0 || at > now) {
			v.expireAt = at
			payload = appendPut(payload, k, v)
		}
	}
	return s.wal.append(payload), nil
}
