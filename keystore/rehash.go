package keystore

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Hash-key rotation ([Options.HashKeys]): a key whose record was digested
// under another hash key than the current one is re-digested at its next
// successful verification. The verification only queues the new digest;
// the flush of last-used times writes it, with a compare-and-set script
// that changes the digest only if it is still the one the verification
// matched, so that a change made in between (a roll, another instance's
// re-digest) is never undone.

// rehash is a new digest waiting to be written.
type rehash struct {
	old, new string // digests, 32 raw bytes
	hashKey  string // the ID of the new digest's key; "" for the legacy one
}

// rehashes are the re-digests waiting for the next flush, by key ID.
type rehashes struct {
	mu      sync.Mutex
	pending map[string]rehash
}

func (r *rehashes) add(id, old string, new [32]byte, hashKey string) {
	r.mu.Lock()
	r.pending[id] = rehash{old: old, new: string(new[:]), hashKey: hashKey}
	r.mu.Unlock()
}

func (r *rehashes) take() map[string]rehash {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return nil
	}
	batch := r.pending
	r.pending = make(map[string]rehash)
	return batch
}

// rehashScript replaces the digest of the record KEYS[1] by ARGV[2], made
// under the hash key ARGV[3] ("" for the legacy one), if it is still
// ARGV[1].
var rehashScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'h') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'x') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[2])
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 'hk') else redis.call('HSET', KEYS[1], 'hk', ARGV[3]) end
return 1
`)

// flushRehashes writes the queued re-digests in one pipeline. Those that
// fail for want of Redis are queued again, unless a newer one came.
func (s *Store) flushRehashes(ctx context.Context) error {
	batch := s.rehashes.take()
	if len(batch) == 0 {
		return nil
	}
	if err := rehashScript.Load(ctx, s.rdb).Err(); err != nil {
		s.requeueRehashes(batch)
		return s.unavailable(opFlush, "re-digesting keys", err)
	}
	cmds := make(map[string]*redis.Cmd, len(batch))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for id, r := range batch {
			cmds[id] = rehashScript.EvalSha(ctx, p, []string{s.names.record(id)}, r.old, r.new, r.hashKey)
		}
		return nil
	})
	var failed error
	for id, cmd := range cmds {
		if err := cmd.Err(); err == nil {
			delete(batch, id)
		} else {
			failed = err
		}
	}
	if failed != nil {
		s.requeueRehashes(batch)
		return s.unavailable(opFlush, "re-digesting keys", failed)
	}
	return nil
}

func (s *Store) requeueRehashes(batch map[string]rehash) {
	s.rehashes.mu.Lock()
	defer s.rehashes.mu.Unlock()
	for id, r := range batch {
		if _, newer := s.rehashes.pending[id]; !newer {
			s.rehashes.pending[id] = r
		}
	}
}
