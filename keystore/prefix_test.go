package keystore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
)

// TestAcceptedKeyPrefixes: after KeyPrefix changes, secrets issued under
// a prefix listed in AcceptedKeyPrefixes still verify (from Redis and from
// the cache) while new keys get the new prefix; without the list, every
// earlier secret is malformed.
func TestAcceptedKeyPrefixes(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	old := newEnv(t, rdb) // KeyPrefix "ak_"
	oldKey, err := old.store.Create(ctx, CreateParams{Name: "n", Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		prefix   string
		accepted []string
	}{
		{"a longer prefix", "kg_live_", []string{"ak_"}},
		{"a prefix of the same length", "kg_", []string{"ak_"}},
		{"several", "kg_live_", []string{"xx_", "ak_"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := peer(t, old, func(o *Options) { o.KeyPrefix, o.AcceptedKeyPrefixes = tc.prefix, tc.accepted })
			v := newVerifier(t, e, VerifierOptions{})
			waitLive(t, v)
			newKey, err := e.store.Create(ctx, CreateParams{Name: "n", Subject: "s"})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(newKey.Secret, tc.prefix) {
				t.Fatalf("new secret %.12s… does not start with %q", newKey.Secret, tc.prefix)
			}
			for _, k := range []*APIKey{oldKey, newKey} {
				if got, err := e.store.Verify(ctx, k.Secret); err != nil || got.ID != k.ID {
					t.Errorf("Store.Verify of %.12s…: %v", k.Secret, err)
				}
				for i := range 2 { // from Redis, then from the cache
					if got, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil || got.ID != k.ID {
						t.Errorf("Verifier.Verify #%d of %.12s…: %v", i+1, k.Secret, err)
					}
				}
			}
			if !cached(v, oldKey.ID) {
				t.Error("the key under an accepted prefix was not cached")
			}
			wrong := "zz_" + oldKey.Secret[len("ak_"):]
			if _, err := v.Verify(ctx, wrong, SourceAPI); !errors.Is(err, ErrMalformed) {
				t.Errorf("a secret under an unknown prefix: %v, want ErrMalformed", err)
			}
		})
	}
	t.Run("without the list, earlier secrets are malformed", func(t *testing.T) {
		e := peer(t, old, func(o *Options) { o.KeyPrefix = "kg_live_" })
		if _, err := e.store.Verify(ctx, oldKey.Secret); !errors.Is(err, ErrMalformed) {
			t.Fatalf("got %v, want ErrMalformed", err)
		}
	})
	t.Run("an invalid accepted prefix is refused", func(t *testing.T) {
		if _, err := New(rdb, Options{AcceptedKeyPrefixes: []string{"ak-"}}); err == nil || !strings.Contains(err.Error(), `"ak-"`) {
			t.Fatalf("New: %v", err)
		}
	})
}
