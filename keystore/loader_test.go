package keystore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
)

// gateHook holds the first single HGETALL sent after arm until release,
// so that a test can queue loads behind it.
type gateHook struct {
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func newGate() *gateHook {
	return &gateHook{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateHook) arm() { g.mu.Lock(); g.armed = true; g.mu.Unlock() }

func (g *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		g.mu.Lock()
		hold := g.armed && cmd.Name() == "hgetall"
		if hold {
			g.armed = false
		}
		g.mu.Unlock()
		if hold {
			close(g.entered)
			<-g.release
		}
		return next(ctx, cmd)
	}
}

func (g *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestLoaderBatchesWaitingLoads(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		var keys []*APIKey
		for i := 0; i < 4; i++ {
			keys = append(keys, mustCreate(t, e.store, CreateParams{Name: fmt.Sprint(i), Subject: "s"}))
		}
		gate := newGate()
		e.rdb.AddHook(gate)
		l := newLoader(e.store, 1)
		e.cmds.reset()

		// The first load goes alone and is held on the wire.
		gate.arm()
		first := make(chan error, 1)
		go func() {
			rec, err := l.load(ctx, keys[0].ID)
			if err == nil && rec.key.ID != keys[0].ID {
				err = fmt.Errorf("got key %s", rec.key.ID)
			}
			first <- err
		}()
		<-gate.entered

		// The others queue: three keys, an unknown ID, and a caller that
		// gives up before the answer.
		type result struct {
			id  string
			rec *record
			err error
		}
		unknown := "ak_" + fmt.Sprintf("%032x", 7)
		ids := []string{keys[1].ID, keys[2].ID, keys[3].ID, unknown}
		results := make(chan result, len(ids))
		for _, id := range ids {
			go func() {
				rec, err := l.load(ctx, id)
				results <- result{id, rec, err}
			}()
		}
		gone, cancel := context.WithCancel(ctx)
		abandoned := make(chan error, 1)
		go func() { _, err := l.load(gone, keys[1].ID); abandoned <- err }()
		waitFor(t, "five loads to queue", func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return len(l.waiting) == 5
		})
		cancel()
		if err := <-abandoned; !errors.Is(err, ErrUnavailable) {
			t.Errorf("a load whose context ended = %v, want ErrUnavailable", err)
		}

		close(gate.release)
		if err := <-first; err != nil {
			t.Fatalf("first load: %v", err)
		}
		for range ids {
			r := <-results
			switch {
			case r.id == unknown:
				if !errors.Is(r.err, ErrNotFound) {
					t.Errorf("unknown ID = %v, want ErrNotFound", r.err)
				}
			case r.err != nil:
				t.Errorf("load %s: %v", r.id, r.err)
			case r.rec.key.ID != r.id || r.rec.digest == "":
				t.Errorf("load %s returned the record of %s", r.id, r.rec.key.ID)
			}
		}
		waitFor(t, "the loader to be idle", func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.onWire == 0 && len(l.waiting) == 0
		})
		names, trips := e.cmds.snapshot()
		if len(names) != 6 || trips != 2 {
			t.Errorf("sent %v in %d round trips, want 6 HGETALLs in 2: the first alone, the queue as one pipeline", names, trips)
		}
	})
}

func TestLoaderBatchFailsUnavailable(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
	gate := newGate()
	e.rdb.AddHook(gate)
	l := newLoader(e.store, 1)
	gate.arm()
	first := make(chan error, 1)
	go func() { _, err := l.load(context.Background(), k.ID); first <- err }()
	<-gate.entered
	queued := make(chan error, 1)
	go func() { _, err := l.load(context.Background(), k.ID); queued <- err }()
	waitFor(t, "a load to queue", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.waiting) == 1
	})
	mr.Close()
	close(gate.release)
	for name, ch := range map[string]chan error{"the load on the wire": first, "the queued load": queued} {
		if err := <-ch; !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with Redis gone = %v, want ErrUnavailable", name, err)
		}
	}
}

// TestUncachedVerifyUnderLoad verifies many keys from many goroutines
// with the cache off, so that loads queue and share pipelines: each
// verification must get its own key.
func TestUncachedVerifyUnderLoad(t *testing.T) {
	e := newEnv(t, redistest.Server(t))
	v := newVerifier(t, e, VerifierOptions{CacheTTL: -1})
	ctx := context.Background()
	var keys []*APIKey
	for i := 0; i < 40; i++ {
		keys = append(keys, mustCreate(t, e.store, CreateParams{Name: fmt.Sprint(i), Subject: "s", Scopes: []string{fmt.Sprint("s", i)}}))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				k := keys[(w*7+i)%len(keys)]
				got, err := v.Verify(ctx, k.Secret, SourceAPI, k.Scopes...)
				if err == nil && got.ID != k.ID {
					err = fmt.Errorf("verifying %s returned %s", k.ID, got.ID)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
