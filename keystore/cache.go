package keystore

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cache holds the records a [Verifier] loaded, by key ID, for at most ttl.
// It never holds a secret: an entry is the record as Redis stores it (the
// key and its digest), and its key is the 16 bytes of the ID.
//
// It is split in shards, each a map under its own lock, so that lookups on
// several cores do not contend. Each shard has a generation, bumped by every
// invalidation and every flush: a fill inserts its record only if the
// generation it read before loading the record is still current, so a load
// that began before an invalidation cannot put back what it removed.
//
// When a shard is full, inserting evicts an arbitrary entry (Go's map
// iteration order is random): cheap, and fair enough for a working set of
// keys that mostly fits.
type cache struct {
	ttl     time.Duration
	shards  []cacheShard
	mask    uint8
	entries prometheus.Gauge
}

type cacheShard struct {
	mu    sync.RWMutex
	gen   atomic.Uint64 // written under mu
	m     map[keyID]*cacheEntry
	limit int
	_     [64]byte // keeps shards' locks on separate cache lines
}

// keyID is a key ID without its "ak_": the 16 bytes its 32 hex characters
// encode. Keying the cache by value copies nothing of the secret.
type keyID [idHexLen / 2]byte

// cacheEntry is immutable once inserted, but for recorded.
type cacheEntry struct {
	key    *APIKey
	digest string    // as stored: 32 raw bytes
	loaded time.Time // by the store's clock, when the load began
	// recorded is the last use recorded for last_used_at (Unix ms).
	recorded atomic.Int64
}

func newCache(size int, ttl time.Duration, entries prometheus.Gauge) *cache {
	n := 1
	if size >= 1024 {
		n = 16
	}
	c := &cache{ttl: ttl, shards: make([]cacheShard, n), mask: uint8(n - 1), entries: entries}
	for i := range c.shards {
		c.shards[i].m = make(map[keyID]*cacheEntry)
		c.shards[i].limit = size / n
	}
	return c
}

func (c *cache) shard(id *keyID) *cacheShard { return &c.shards[id[0]&c.mask] }

// get returns the entry of id if it is younger than the TTL at now.
func (c *cache) get(id *keyID, now time.Time) *cacheEntry {
	s := c.shard(id)
	s.mu.RLock()
	e := s.m[*id]
	s.mu.RUnlock()
	if e == nil || now.Sub(e.loaded) >= c.ttl {
		return nil
	}
	return e
}

// generation is read before loading a record, and handed to insert after.
func (c *cache) generation(id *keyID) uint64 { return c.shard(id).gen.Load() }

// insert stores e under id unless the shard's generation moved past gen:
// an invalidation or a flush happened since the load began.
func (c *cache) insert(id *keyID, e *cacheEntry, gen uint64) bool {
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != gen {
		return false
	}
	if _, ok := s.m[*id]; !ok {
		if len(s.m) >= s.limit {
			for victim := range s.m {
				delete(s.m, victim)
				c.entries.Dec()
				break
			}
		}
		c.entries.Inc()
	}
	s.m[*id] = e
	return true
}

// invalidate drops id and fails every fill of its shard in progress.
func (c *cache) invalidate(id *keyID) {
	s := c.shard(id)
	s.mu.Lock()
	if _, ok := s.m[*id]; ok {
		delete(s.m, *id)
		c.entries.Dec()
	}
	s.gen.Add(1)
	s.mu.Unlock()
}

// flush drops every entry and fails every fill in progress.
func (c *cache) flush() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n := len(s.m)
		clear(s.m)
		s.gen.Add(1)
		s.mu.Unlock()
		c.entries.Sub(float64(n))
	}
}

// len is the number of entries, expired ones included.
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// parseKeyID decodes the 32 lowercase hex characters of a key ID, which
// parseSecret or ValidID has checked.
func parseKeyID(idHex string) (id keyID) {
	for i := range id {
		id[i] = unhex(idHex[2*i])<<4 | unhex(idHex[2*i+1])
	}
	return id
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}
