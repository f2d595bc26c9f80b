package keystore

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// loader reads the records of a [Verifier]'s cache misses. A load that
// finds fewer than max loads on the wire goes at once, alone, as
// [Store.load] would send it. One that finds max of them waits in a queue,
// and the whole queue goes as one pipeline as soon as one of those returns:
// under load, many verifications share a round trip and two system calls,
// which is what bounds the rate of uncached verifications. No lock is held
// across I/O.
type loader struct {
	store *Store
	max   int

	mu      sync.Mutex
	onWire  int         // loads and pipelines sent and not yet answered
	waiting []*loadCall // loads queued for the next pipeline
}

// loadCall is one queued load and, once done is closed, its result.
type loadCall struct {
	id   string
	rec  *record
	err  error
	done chan struct{}
}

// pipelineTimeout bounds a pipeline of queued loads. Each caller also
// stops waiting when its own context is done.
const pipelineTimeout = 5 * time.Second

func newLoader(s *Store, max int) *loader { return &loader{store: s, max: max} }

// load reads the record of id, as [Store.load] does, for a verification.
func (l *loader) load(ctx context.Context, id string) (*record, error) {
	l.mu.Lock()
	if l.onWire < l.max {
		l.onWire++
		l.mu.Unlock()
		rec, err := l.store.load(ctx, id, opVerify)
		l.done()
		return rec, err
	}
	c := &loadCall{id: id, done: make(chan struct{})}
	l.waiting = append(l.waiting, c)
	l.mu.Unlock()
	select {
	case <-c.done:
		return c.rec, c.err
	case <-ctx.Done():
		return nil, l.store.unavailable(opVerify, "loading key "+id, ctx.Err())
	}
}

// done frees the place of an answered load or pipeline, or hands it to
// the loads waiting: they go as the next pipeline, from a goroutine of
// their own, so that the caller returns at once.
func (l *loader) done() {
	l.mu.Lock()
	if len(l.waiting) == 0 {
		l.onWire--
		l.mu.Unlock()
		return
	}
	batch := l.waiting
	l.waiting = nil
	l.mu.Unlock()
	go l.send(batch)
}

// send reads the records of batch in one pipeline, answers each call, and
// then frees its place (or sends the next batch).
func (l *loader) send(batch []*loadCall) {
	s := l.store
	ctx, cancel := context.WithTimeout(context.Background(), pipelineTimeout)
	cmds := make([]*redis.MapStringStringCmd, len(batch))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			cmds[i] = p.HGetAll(ctx, s.names.record(c.id))
		}
		return nil
	})
	cancel()
	now := s.now()
	for i, c := range batch {
		if h, err := cmds[i].Result(); err != nil {
			c.err = s.unavailable(opVerify, "loading key "+c.id, err)
		} else if rec, ok := decodeRecord(c.id, h, now); ok {
			c.rec = rec
		} else {
			c.err = ErrNotFound
		}
		close(c.done)
	}
	l.done()
}
