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
// It is split in shards, each a map under its own lock for changes.
// Lookups take no lock: each shard also keeps its entries in a [sync.Map],
// whose loads write nothing shared, so that verifications of the same key
// on several cores read the entry without passing a lock's cache line
// between them (a read lock writes its reader count). Each shard has a
// generation, bumped by every invalidation and every flush: a fill inserts
// its record only if the generation it read before loading the record is
// still current, so a load that began before an invalidation cannot put
// back what it removed.
//
// Each shard holds at most its share of the cache's entries and of its
// bytes (an estimate of what an entry keeps alive: the record's strings,
// claims and scopes, and fixed overheads). When a shard is full, inserting
// evicts arbitrary entries (Go's map iteration order is random) until the
// new one fits: cheap, and fair enough for a working set of keys that
// mostly fits. Expired entries are swept, so that a cache of keys used once
// does not hold them until they are evicted.
type cache struct {
	ttl     time.Duration
	shards  []cacheShard
	mask    uint8
	entries prometheus.Gauge
}

type cacheShard struct {
	mu        sync.Mutex
	gen       atomic.Uint64         // written under mu
	read      sync.Map              // keyID → *cacheEntry, for get; written under mu
	m         map[keyID]*cacheEntry // the same entries, under mu: counted, swept and evicted
	limit     int                   // entries
	bytes     int64                 // held, by entrySize
	byteLimit int64
	_         [64]byte // keeps shards' locks on separate cache lines
}

// keyID is a key ID without its "ak_": the 16 bytes its 32 hex characters
// encode. Keying the cache by value copies nothing of the secret.
type keyID [idHexLen / 2]byte

// cacheEntry is immutable once inserted, but for recorded.
type cacheEntry struct {
	key     *APIKey
	digest  string    // as stored: 32 raw bytes
	hashKey string    // the ID of the hash key that made digest
	loaded  time.Time // by the store's clock, when the load began
	// The store's own state of the key: its parsed CIDRs, its meter.
	keyState
	// recorded is the last use recorded for last_used_at (Unix ms).
	recorded atomic.Int64
	// rehashed is set once a new digest, under the current hash key, is
	// queued for the record.
	rehashed atomic.Bool
}

// entryOverhead estimates the bytes of an entry besides its variable
// strings: the cacheEntry with the key's state (120 bytes), the APIKey and
// its headers (288), its slot in the shard's map and its node in the lock-free
// one (with the boxed ID and a share of the trie: about 100).
const entryOverhead = 576

// entrySize estimates the bytes e keeps alive.
func entrySize(e *cacheEntry) int64 {
	k := e.key
	if k == nil {
		return entryOverhead + int64(len(e.digest))
	}
	n := entryOverhead + len(e.digest) + len(k.ID) + len(k.Type) + len(k.Name) + len(k.Subject) + len(k.Claims)
	for _, p := range []*string{k.Description, k.CreatedBy, k.RevocationReason} {
		if p != nil {
			n += len(*p)
		}
	}
	for _, sc := range k.Scopes {
		n += 16 + len(sc)
	}
	for _, c := range k.AllowedCIDRs {
		n += 16 + len(c) + 32 // the string, and its parsed prefix
	}
	return int64(n)
}

func newCache(size int, maxBytes int64, ttl time.Duration, entries prometheus.Gauge) *cache {
	n := 1
	if size >= 1024 && maxBytes >= 1<<20 {
		n = 16
	}
	c := &cache{ttl: ttl, shards: make([]cacheShard, n), mask: uint8(n - 1), entries: entries}
	for i := range c.shards {
		c.shards[i].m = make(map[keyID]*cacheEntry)
		c.shards[i].limit = size / n
		c.shards[i].byteLimit = maxBytes / int64(n)
	}
	return c
}

func (c *cache) shard(id *keyID) *cacheShard { return &c.shards[id[0]&c.mask] }

// get returns the entry of id if it is younger than the TTL at now.
func (c *cache) get(id *keyID, now time.Time) *cacheEntry {
	v, ok := c.shard(id).read.Load(*id)
	if !ok {
		return nil
	}
	e := v.(*cacheEntry)
	if now.Sub(e.loaded) >= c.ttl {
		return nil
	}
	return e
}

// generation is read before loading a record, and handed to insert after.
func (c *cache) generation(id *keyID) uint64 { return c.shard(id).gen.Load() }

// insert stores e under id unless the shard's generation moved past gen:
// an invalidation or a flush happened since the load began.
func (c *cache) insert(id *keyID, e *cacheEntry, gen uint64) bool {
	size := entrySize(e)
	s := c.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != gen || size > s.byteLimit {
		return false
	}
	if old, ok := s.m[*id]; ok {
		c.removeLocked(s, id, old)
	}
	for victim, ve := range s.m {
		if len(s.m) < s.limit && s.bytes+size <= s.byteLimit {
			break
		}
		c.removeLocked(s, &victim, ve)
	}
	s.m[*id] = e
	s.read.Store(*id, e)
	s.bytes += size
	c.entries.Inc()
	return true
}

// removeLocked drops the entry e of id; s.mu is held.
func (c *cache) removeLocked(s *cacheShard, id *keyID, e *cacheEntry) {
	delete(s.m, *id)
	s.read.Delete(*id)
	s.bytes -= entrySize(e)
	c.entries.Dec()
}

// sweep drops the entries older than the TTL at now.
func (c *cache) sweep(now time.Time) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for id, e := range s.m {
			if now.Sub(e.loaded) >= c.ttl {
				c.removeLocked(s, &id, e)
			}
		}
		s.mu.Unlock()
	}
}

// invalidate drops id and fails every fill of its shard in progress.
func (c *cache) invalidate(id *keyID) {
	s := c.shard(id)
	s.mu.Lock()
	if e, ok := s.m[*id]; ok {
		c.removeLocked(s, id, e)
	}
	s.gen.Add(1)
	s.mu.Unlock()
}

// dropSubject drops every entry of the subject's keys and fails every
// fill in progress: a bulk revocation.
func (c *cache) dropSubject(subject string) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for id, e := range s.m {
			if e.key.Subject == subject {
				c.removeLocked(s, &id, e)
			}
		}
		s.gen.Add(1)
		s.mu.Unlock()
	}
}

// flush drops every entry and fails every fill in progress.
func (c *cache) flush() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n := len(s.m)
		clear(s.m)
		s.read.Clear()
		s.bytes = 0
		s.gen.Add(1)
		s.mu.Unlock()
		c.entries.Sub(float64(n))
	}
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
