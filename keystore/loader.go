package keystore

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// loader sends a [Verifier]'s Redis commands: the records of its cache
// misses, and the metering scripts of keys with limits or credits. A call
// that finds fewer than max calls on the wire goes at once, alone, as
// [Store.load] or [Store.meter] would send it. One that finds max of them
// waits in a queue, and the whole queue goes as one pipeline as soon as one
// of those returns: under load, many verifications share a round trip and
// two system calls, which is what bounds the rate of uncached (and of
// metered) verifications. No lock is held across I/O.
type loader struct {
	store *Store
	max   int

	mu      sync.Mutex
	onWire  int         // loads and pipelines sent and not yet answered
	waiting []*loadCall // loads queued for the next pipeline
}

// loadCall is one queued call and, once done is closed, its result: a
// record load, or with meter set a metering script.
type loadCall struct {
	id    string
	meter *meterCall
	rec   *record
	raw   []any
	err   error
	done  chan struct{}
}

// pipelineTimeout bounds a pipeline of queued loads. Each caller also
// stops waiting when its own context is done.
const pipelineTimeout = 5 * time.Second

func newLoader(s *Store, max int) *loader { return &loader{store: s, max: max} }

// load reads the record of id, as [Store.load] does, for a verification.
func (l *loader) load(ctx context.Context, id string) (*record, error) {
	if l.enter() {
		rec, err := l.store.load(ctx, id, opVerify)
		l.done()
		return rec, err
	}
	c := &loadCall{id: id, done: make(chan struct{})}
	if err := l.wait(ctx, c); err != nil {
		return nil, l.store.unavailable(opVerify, "loading key "+id, err)
	}
	return c.rec, c.err
}

// meter runs the metering script of a verification of k, whose state st
// is, as [Store.meter] does.
func (l *loader) meter(ctx context.Context, k *APIKey, st *keyState, cost int64, now time.Time) (*LimitState, error) {
	if l.enter() {
		ls, err := l.store.meter(ctx, k, st, cost, now)
		l.done()
		return ls, err
	}
	c := &loadCall{id: st.meterID(k), meter: newMeterCall(k, cost, now), done: make(chan struct{})}
	if err := l.wait(ctx, c); err != nil {
		return nil, l.store.unavailable(opMeter, "metering key "+k.ID, err)
	}
	return l.store.metered(c.meter, c.raw, c.err)
}

// enter takes a place on the wire, and reports false (keeping the lock)
// when there is none: the caller then queues with wait.
func (l *loader) enter() bool {
	l.mu.Lock()
	if l.onWire < l.max {
		l.onWire++
		l.mu.Unlock()
		return true
	}
	return false
}

// wait queues c (l.mu is held, from enter) for the next pipeline, and
// waits for its result or for ctx to end.
func (l *loader) wait(ctx context.Context, c *loadCall) error {
	l.waiting = append(l.waiting, c)
	l.mu.Unlock()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
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
	scripts := make([]*redis.Cmd, len(batch))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range batch {
			if c.meter != nil {
				scripts[i] = meterScript.EvalSha(ctx, p, []string{s.names.record(c.id)}, c.meter.args...)
			} else {
				cmds[i] = p.HGetAll(ctx, s.names.record(c.id))
			}
		}
		return nil
	})
	for i, c := range batch {
		if c.meter == nil {
			continue
		}
		c.raw, c.err = scripts[i].Slice()
		if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
			// The server has not seen the script yet: this call alone
			// loads it.
			c.raw, c.err = meterScript.Run(ctx, s.rdb, []string{s.names.record(c.id)}, c.meter.args...).Slice()
		}
		close(c.done)
	}
	cancel()
	now := s.now()
	for i, c := range batch {
		if c.meter != nil {
			continue
		}
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
