package embedded

import (
	"slices"
	"strings"
	"sync"

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
	ttl     bool // the TTL may have been set or cleared
	kind    byte // member-level kind, when not whole
	members map[string]struct{}
}

// mark notes that a command changed key: its TTL (kind kindTTL), some of
// its members (kind kindZSet, kindHash or kindSet, with members), or all of
// it (kind 0). ttl says that the TTL may have been set or cleared.
func (d *dirty) mark(key string, ttl bool, kind byte, members []string) {
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
	k.ttl = k.ttl || ttl
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
	for _, k := range keys {
		if ttl {
			// Until the write is captured, the engine answers TTL reads.
			s.exp.forget(k)
		}
		if !s.durable(k) {
			if ttl {
				// Not logged, but its expiry is kept, so that it expires.
				s.dirty.mark(k, true, kindTTL, nil)
			}
			continue
		}
		s.dirty.mark(k, ttl, kind, members)
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
	pttl, err := c.int("PTTL", key)
	if err != nil {
		return payload, err
	}
	durable := s.durable(key)
	expireAt, ttlChanged := s.reconcileTTL(key, int64(pttl), d.ttl)
	if !durable {
		return payload, nil
	}
	if pttl == -2 {
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
			return s.captureKey(payload, key, &dirtyKey{whole: true, ttl: d.ttl})
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

// reconcileTTL updates the key's expiry from the engine's PTTL (-2: no key,
// -1: no TTL). The engine's TTL does not count down, so an unchanged PTTL
// means the TTL was not set again, unless the command may have set it.
func (s *Store) reconcileTTL(key string, pttl int64, mayHaveSet bool) (at int64, changed bool) {
	old, had := s.exp.get(key)
	if pttl < 0 {
		if had {
			s.exp.forget(key)
		}
		return 0, had || mayHaveSet
	}
	if had && !mayHaveSet && old.ttl == pttl {
		return old.at, false
	}
	at = s.now().UnixMilli() + pttl
	s.exp.set(key, at, pttl)
	return at, true
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
		pttl, err := s.writeConn.int("PTTL", k)
		if err != nil {
			return 0, err
		}
		at, _ := s.reconcileTTL(k, int64(pttl), false)
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
