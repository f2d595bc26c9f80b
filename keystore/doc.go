// Package keystore keeps API keys in Redis and verifies them.
//
// A key's secret is shown once, by [Store.Create]; Redis holds only its
// digest. [Store.Verify] checks a secret in one Redis round trip and records
// the use, which is written to last_used_at in batches.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	store, err := keystore.New(rdb, keystore.Options{})
//	if err != nil { … }
//	defer store.Close()
//
//	key, err := store.Create(ctx, keystore.CreateParams{Name: "CI", Subject: "user_42"})
//	fmt.Println(key.Secret) // shown this once
//
//	got, err := store.Verify(ctx, key.Secret)
//	switch {
//	case errors.Is(err, keystore.ErrUnavailable): // fail closed: 503
//	case err != nil: // malformed, not found, revoked or expired: 401
//	default: // got.Subject, got.Scopes …
//	}
//
// Entry points verify through a [Verifier], which caches the keys it
// verified and drops them the moment a [Store] anywhere revokes, updates or
// deletes them:
//
//	v, err := keystore.NewVerifier(store, keystore.VerifierOptions{Registerer: reg})
//	if err != nil { … }
//	defer v.Close()
//
//	key, err := v.Verify(ctx, secret, keystore.SourceMiddleware, "reports:read")
//	switch {
//	case errors.Is(err, keystore.ErrUnavailable): // 503
//	case errors.Is(err, keystore.ErrInsufficientScope): // 403
//	case err != nil: // 401
//	}
//
// The key's types, the calls' parameters and the sentinel errors are
// defined in package keystore/apikey, which needs no Redis, and keep their
// names here ([APIKey] is apikey.APIKey): a program that only talks to the
// admin API (keystore/client) imports apikey (docs/packages.md).
//
// The Redis layout, and how revocation reaches every verifier's cache, are
// described in README.md beside this file.
package keystore
