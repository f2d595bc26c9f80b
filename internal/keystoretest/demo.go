package keystoretest

import (
	"context"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
)

// Demo returns a store and a verifier on an in-process Redis (miniredis),
// the secret of a key of user_42 with the scope reports:read, and the
// function that closes them: the setting of the packages' runnable examples, which have
// no testing.T. It panics on an error.
func Demo() (*keystore.Store, *keystore.Verifier, string, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	store, err := keystore.New(rdb, keystore.Options{})
	if err != nil {
		panic(err)
	}
	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{})
	if err != nil {
		panic(err)
	}
	key, err := store.Create(context.Background(), keystore.CreateParams{
		Name: "reports bot", Subject: "user_42", Scopes: []string{"reports:read"},
	})
	if err != nil {
		panic(err)
	}
	return store, verifier, key.Secret, func() {
		verifier.Close()
		store.Close()
		rdb.Close()
		mr.Close()
	}
}
