package keystore

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
)

// recordingTracer records what a verifier tells its tracer.
type recordingTracer struct {
	mu    sync.Mutex
	calls []string // "source outcome hit keyID"
}

type tracedKey struct{}

func (r *recordingTracer) StartVerification(ctx context.Context, source Source) (context.Context, func(string, bool, string)) {
	return context.WithValue(ctx, tracedKey{}, true), func(outcome string, hit bool, keyID string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		h := "miss"
		if hit {
			h = "hit"
		}
		r.calls = append(r.calls, string(source)+" "+outcome+" "+h+" "+keyID)
	}
}

// ctxHook records whether each Redis command ran under a traced context.
type ctxHook struct {
	mu     sync.Mutex
	traced int
}

func (h *ctxHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *ctxHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(tracedKey{}) != nil {
			h.mu.Lock()
			h.traced++
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (h *ctxHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if ctx.Value(tracedKey{}) != nil {
			h.mu.Lock()
			h.traced++
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// TestTracer: the tracer hears of each verification once, with its
// outcome, whether the cache answered and the key's ID, and the Redis
// commands of a cache miss run under the context it returned. Without a
// tracer, a cached verification allocates once, as it did before tracers
// existed (BenchmarkVerifyCached).
func TestTracer(t *testing.T) {
	_, rdb := redistest.Mini(t)
	hook := &ctxHook{}
	rdb.AddHook(hook)
	s, err := New(rdb, Options{LastUsedFlush: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rt := &recordingTracer{}
	v, err := NewVerifier(s, VerifierOptions{Tracer: rt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	waitLive(t, v)
	ctx := context.Background()
	k, err := s.Create(ctx, CreateParams{Name: "n", Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	v.Verify(ctx, k.Secret, SourceSidecar)
	if hook.traced == 0 {
		t.Error("the cache miss read Redis outside the tracer's context")
	}
	v.Verify(ctx, k.Secret, SourceSidecar)
	v.Verify(ctx, k.Secret, SourceSidecar, "admin")
	v.Verify(ctx, "", SourceAPI)
	want := []string{"sidecar valid miss " + k.ID, "sidecar valid hit " + k.ID, "sidecar insufficient_scope hit " + k.ID, "api missing miss "}
	if len(rt.calls) != len(want) {
		t.Fatalf("tracer calls %q, want %q", rt.calls, want)
	}
	for i := range want {
		if rt.calls[i] != want[i] {
			t.Errorf("call %d: %q, want %q", i, rt.calls[i], want[i])
		}
	}

	off, err := NewVerifier(s, VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { off.Close() })
	waitLive(t, off)
	off.Verify(ctx, k.Secret, SourceMiddleware)
	if !cached(off, k.ID) {
		t.Fatal("key not cached")
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := off.Verify(ctx, k.Secret, SourceMiddleware); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("a cached verification without a tracer allocates %v times, want 1", allocs)
	}
}
