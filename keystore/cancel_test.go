package keystore

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
)

// TestClientGoneIsNotAStoreError: a request whose client went away
// (its context canceled) is not a store error: keygate_store_errors_total
// does not move, and no Cluster slot map reload is asked for. A real
// failure still counts.
func TestClientGoneIsNotAStoreError(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb, func(o *Options) { o.Registerer = reg })
	v := newVerifier(t, e, VerifierOptions{CacheTTL: -1})
	k, err := e.store.Create(context.Background(), CreateParams{Name: "n", Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	errorsCounted := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "keygate_store_errors_total" {
				for _, m := range mf.GetMetric() {
					sum += m.GetCounter().GetValue()
				}
			}
		}
		return sum
	}

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.store.Get(gone, k.ID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with a canceled context: %v", err)
	}
	if _, err := v.Verify(gone, k.Secret, SourceSidecar); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Verify with a canceled context: %v", err)
	}
	if n := errorsCounted(); n != 0 {
		t.Fatalf("keygate_store_errors_total = %v after clients went away, want 0", n)
	}

	broken := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, MaxRetries: -1})
	broken.Close()
	e.store.rdb = broken
	if _, err := e.store.Get(context.Background(), k.ID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get on a closed client: %v", err)
	}
	if n := errorsCounted(); n != 1 {
		t.Fatalf("keygate_store_errors_total = %v after a real failure, want 1", n)
	}
}

func TestStoreFault(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{redis.Nil, false},
		{context.Canceled, false},
		{unavailable("loading key", context.Canceled), false},
		{context.DeadlineExceeded, true}, // Redis too slow for the caller's deadline
		{errors.New("dial tcp: connection refused"), true},
		{redis.ErrClosed, true},
	} {
		if got := storeFault(tc.err); got != tc.want {
			t.Errorf("storeFault(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
