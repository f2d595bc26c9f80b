package keystore

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// lastUsed coalesces successful verifications in memory: one entry per key
// and core, holding the newest use, whatever the request rate. A key is
// recorded at most once per millisecond by each cache entry, which for
// many keys is still most verifications, on every core: the entries are
// split into stripes, each a map under its own lock on cache lines of its
// own, and a core keeps writing to the same stripe ([stripe]), so that
// cores verifying the same keys do not take turns at one lock. The flush
// takes the newest use of each key over the stripes.
type lastUsed struct {
	stripes [stripes]lastUsedStripe
}

type lastUsedStripe struct {
	mu      sync.Mutex
	pending map[string]int64 // key ID → Unix ms
	_       [64]byte         // keeps stripes' locks on separate cache lines
}

// record records a use of id at ms in the stripe sn. Two callers may hold
// the same stripe, hence its lock.
func (l *lastUsed) record(sn *stripe, id string, ms int64) {
	l.stripes[sn.n].add(id, ms)
}

func (s *lastUsedStripe) add(id string, ms int64) {
	s.mu.Lock()
	if ms > s.pending[id] {
		if s.pending == nil {
			s.pending = make(map[string]int64)
		}
		s.pending[id] = ms
	}
	s.mu.Unlock()
}

// take empties the pending uses and returns the newest of each key.
func (l *lastUsed) take() map[string]int64 {
	var batch map[string]int64
	for i := range l.stripes {
		s := &l.stripes[i]
		s.mu.Lock()
		taken := s.pending
		if len(taken) == 0 {
			s.mu.Unlock()
			continue
		}
		s.pending = make(map[string]int64, len(taken))
		s.mu.Unlock()
		if batch == nil {
			batch = taken
			continue
		}
		for id, ms := range taken {
			if ms > batch[id] {
				batch[id] = ms
			}
		}
	}
	return batch
}

// putBack returns uses that could not be written, for the next flush.
func (l *lastUsed) putBack(batch map[string]int64) {
	sn := takeStripe()
	s := &l.stripes[sn.n]
	for id, ms := range batch {
		s.add(id, ms)
	}
	sn.release()
}

// touchScript writes a use only if it is newer than the stored one, and
// never brings back a deleted key.
var touchScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'lu')
if not cur then
  if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'x') == 1 then return 0 end
elseif tonumber(cur) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'lu', ARGV[1])
return 1
`)

// FlushLastUsed writes the uses recorded since the last flush: one write per
// key, in one pipeline. Uses that could not be written are kept for the next
// flush. It also writes the new digests of keys verified under an older
// hash key ([Options.HashKeys]). [Store.Close] calls it; so does a
// background loop every [Options.LastUsedFlush].
func (s *Store) FlushLastUsed(ctx context.Context) error {
	return errors.Join(s.flushLastUsed(ctx), s.flushRehashes(ctx))
}

func (s *Store) flushLastUsed(ctx context.Context) error {
	batch := s.lastUsed.take()
	if len(batch) == 0 {
		return nil
	}
	ids := make([]string, 0, len(batch))
	for id := range batch {
		ids = append(ids, id)
	}
	failed, err := s.touch(ctx, ids, batch, touchScript.EvalSha)
	if len(failed) > 0 && err == nil {
		// NOSCRIPT: the server has not seen the script yet. EVAL loads it.
		_, err = s.touch(ctx, failed, batch, touchScript.Eval)
	}
	if err != nil {
		s.lastUsed.putBack(batch)
		return s.unavailable(opFlush, "flushing last-used times", err)
	}
	s.metrics.flushes.Inc()
	return nil
}

type evalFunc func(ctx context.Context, c redis.Scripter, keys []string, args ...any) *redis.Cmd

// touch runs the touch script for ids in one pipeline and returns the IDs
// whose script the server did not know.
func (s *Store) touch(ctx context.Context, ids []string, batch map[string]int64, eval evalFunc) (noScript []string, err error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(ids))
	for i, id := range ids {
		cmds[i] = eval(ctx, pipe, []string{s.names.record(id)}, batch[id])
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		switch err := cmd.Err(); {
		case err == nil:
			delete(batch, ids[i])
		case redis.HasErrorPrefix(err, "NOSCRIPT"):
			noScript = append(noScript, ids[i])
		default:
			return nil, err
		}
	}
	return noScript, nil
}

func (s *Store) flushLoop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), every+5*time.Second)
			if err := s.FlushLastUsed(ctx); err != nil {
				s.opts.Logger.Warn("flushing last-used times", "err", err)
			}
			if err := s.FlushUsage(ctx); err != nil {
				s.opts.Logger.Warn("flushing usage history", "err", err)
			}
			cancel()
		}
	}
}
