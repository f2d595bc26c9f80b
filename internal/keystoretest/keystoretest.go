// Package keystoretest opens a keystore Store and Verifier for the tests of
// the packages built on keystore (middleware, sidecar, the admin API, the
// client, webhooks), closed at the test's cleanup.
//
//	_, rdb := redistest.Mini(t)
//	store, verifier := keystoretest.New(t, rdb, keystore.Options{LastUsedFlush: -1}, keystore.VerifierOptions{})
//	k := keystoretest.Create(t, store, keystore.CreateParams{Scopes: []string{"reports:read"}})
package keystoretest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
)

// New opens a store on rdb with opts and a verifier over it with vopts;
// both are closed at cleanup, the verifier first.
func New(t testing.TB, rdb redis.UniversalClient, opts keystore.Options, vopts keystore.VerifierOptions) (*keystore.Store, *keystore.Verifier) {
	t.Helper()
	store, err := keystore.New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := keystore.NewVerifier(store, vopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return store, v
}

// Create creates a key with p, named "test key" for subject user_42 where
// p leaves them empty.
func Create(t testing.TB, s *keystore.Store, p keystore.CreateParams) *keystore.APIKey {
	t.Helper()
	if p.Name == "" {
		p.Name = "test key"
	}
	if p.Subject == "" {
		p.Subject = "user_42"
	}
	k, err := s.Create(context.Background(), p)
	if err != nil {
		t.Fatalf("creating key: %v", err)
	}
	return k
}
