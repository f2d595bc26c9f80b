package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
)

const (
	lastUsedRate = 50_000 // verifications per second
	lastUsedKeys = 100
)

// lastUsedWrites verifies 100 cached keys 50,000 times a second and counts
// the last-used writes the verifier's store sends to Redis, by second.
func lastUsedWrites(ctx context.Context, e *env) ([]row, error) {
	if err := e.fresh(ctx); err != nil {
		return nil, err
	}
	in, err := e.instance(ctx, keystore.Options{}, keystore.VerifierOptions{}, 0)
	if err != nil {
		return nil, err
	}
	defer in.close()
	keys, err := createKeys(ctx, in.store, lastUsedKeys, 16, subjectOf)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if _, err := in.v.Verify(ctx, k.Secret, keystore.SourceMiddleware); err != nil {
			return nil, err
		}
	}
	secs := max(e.cfg.runs, 3)
	hook := &writeCounter{prefix: in.store.Namespace() + ":key:"}
	in.rdb.AddHook(hook)

	done, took, err := pace(ctx, in.v, keys, lastUsedRate, time.Duration(secs)*time.Second)
	if err != nil {
		return nil, err
	}
	total := hook.total.Load()
	// Let the last flush of the measured period happen.
	time.Sleep(1100 * time.Millisecond)
	if k, err := in.store.Get(ctx, keys[0].ID); err != nil || k.LastUsedAt == nil {
		return nil, errors.New("last_used_at was not written")
	}
	maxFlush := hook.maxFlush.Load()
	verifs := float64(done) / took.Seconds()
	return []row{{
		measure:  fmt.Sprintf("last-used writes, %s verifications of %d keys", rate(lastUsedRate), lastUsedKeys),
		keygate:  fmt.Sprintf("%.0f writes/s, at most %d in one flush (%s verifications achieved)", float64(total)/took.Seconds(), maxFlush, rate(verifs)),
		baseline: "—",
		goal:     "≤ 100 per flush second",
		verdict:  verdict(maxFlush <= lastUsedKeys),
		note: fmt.Sprintf("one verifier (default 1 s flush) verifies %d cached keys in turn at %d/s from two paced goroutines for %d s; "+
			"a go-redis hook on its client counts the last-used writes that succeed (one script call per key and flush), over the "+
			"measured period and at most per flush pipeline.",
			lastUsedKeys, lastUsedRate, secs),
	}}, nil
}

// writeCounter is a go-redis hook that counts the successful commands
// touching a key record (the last-used writes: nothing else writes records
// here), in all and at most in one flush (one pipeline).
type writeCounter struct {
	prefix   string
	total    atomic.Int64
	maxFlush atomic.Int64
}

func (h *writeCounter) count(cmds []redis.Cmder) {
	n := int64(0)
	for _, c := range cmds {
		args := c.Args()
		if name := c.Name(); (name == "evalsha" || name == "eval") && len(args) > 3 && c.Err() == nil {
			if key, ok := args[3].(string); ok && strings.HasPrefix(key, h.prefix) {
				n++
			}
		}
	}
	h.total.Add(n)
	for {
		m := h.maxFlush.Load()
		if n <= m || h.maxFlush.CompareAndSwap(m, n) {
			return
		}
	}
}

func (h *writeCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *writeCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.count([]redis.Cmder{cmd})
		return err
	}
}

func (h *writeCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.count(cmds)
		return err
	}
}
