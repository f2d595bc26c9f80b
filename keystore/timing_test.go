package keystore

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWrongSecretIsIndistinguishable checks the structural half of
// constant-time verification (SECURITY.md): a well-formed secret whose
// digest does not match is refused exactly as an unknown key ID is, before
// anything about the key (revoked, expired, its fields) is looked at, on
// the uncached path and on the cached one; and each verification of a
// well-formed secret costs the same Redis commands whether the secret is
// right or wrong. The comparison itself is crypto/subtle's, on digests of
// one fixed length.
func TestWrongSecretIsIndistinguishable(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		one := int64(1)
		live := mustCreate(t, e.store, CreateParams{Name: "live", Subject: "s"})
		revoked := mustCreate(t, e.store, CreateParams{Name: "revoked", Subject: "s"})
		expired := mustCreate(t, e.store, CreateParams{Name: "expired", Subject: "s", SecondsUntilExpiration: &one})
		v := newVerifier(t, e, VerifierOptions{})
		waitLive(t, v)
		// Cache all three with their right secrets first, so that the
		// cached path is exercised below.
		for _, k := range []*APIKey{live, revoked, expired} {
			if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
				t.Fatalf("precondition: %s does not verify: %v", k.Name, err)
			}
		}
		if _, err := e.store.Revoke(ctx, revoked.ID, nil); err != nil {
			t.Fatal(err)
		}
		v.Verify(ctx, revoked.Secret, SourceAPI) // cached again, revoked
		e.clock.Advance(2 * time.Second)
		if !cached(v, live.ID) || !cached(v, revoked.ID) || !cached(v, expired.ID) {
			t.Fatal("precondition: the keys are not cached")
		}

		// A well-formed secret of an ID that does not exist, with a random
		// part of its own: the donor of every wrong secret below.
		unknown, err := newSecret("ak_", "ak_"+strings.Repeat("7", 32))
		if err != nil {
			t.Fatal(err)
		}
		refusals := map[string]string{
			"unknown ID":                    unknown,
			"wrong secret for a live key":   forgeSecret(t, live.ID, unknown),
			"wrong secret, revoked key":     forgeSecret(t, revoked.ID, unknown),
			"wrong secret, expired key":     forgeSecret(t, expired.ID, unknown),
			"right ID, last random flipped": forgeSecret(t, live.ID, live.Secret[:3+idHexLen+randomLen-1]+flip(live.Secret[3+idHexLen+randomLen-1])+live.Secret[3+idHexLen+randomLen:]),
		}
		for name, secret := range refusals {
			t.Run(name, func(t *testing.T) {
				for _, path := range []struct {
					name   string
					verify func() (*APIKey, error)
				}{
					{"store", func() (*APIKey, error) { return e.store.Verify(ctx, secret) }},
					{"verifier", func() (*APIKey, error) { return v.Verify(ctx, secret, SourceAPI) }},
				} {
					k, err := path.verify()
					if !errors.Is(err, ErrNotFound) || err.Error() != ErrNotFound.Error() || k != nil {
						t.Fatalf("%s: Verify = %v, %v; want nil and exactly ErrNotFound, as for an unknown ID", path.name, k, err)
					}
				}
			})
		}
		// The right secrets are told apart only now.
		for k, want := range map[*APIKey]error{live: nil, revoked: ErrRevoked, expired: ErrExpired} {
			if _, err := v.Verify(ctx, k.Secret, SourceAPI); !errors.Is(err, want) && !(want == nil && err == nil) {
				t.Fatalf("%s with its secret: %v, want %v", k.Name, err, want)
			}
		}

		// Uncached, a wrong secret, an unknown ID and the right secret send
		// the same single command.
		var sent [][]string
		for _, secret := range []string{live.Secret, refusals["wrong secret for a live key"], unknown} {
			e.cmds.reset()
			e.store.Verify(ctx, secret)
			names, _ := e.cmds.snapshot()
			sent = append(sent, names)
		}
		if !slices.Equal(sent[0], sent[1]) || !slices.Equal(sent[0], sent[2]) || len(sent[0]) != 1 {
			t.Fatalf("commands sent for right, wrong and unknown: %v; want the same one", sent)
		}

		// Every stored digest has the one length crypto/subtle compares
		// without an early exit.
		for _, k := range []*APIKey{live, revoked, expired} {
			d, err := e.rdb.HGet(ctx, e.store.names.record(k.ID), fDigest).Result()
			if err != nil || len(d) != sha256.Size {
				t.Fatalf("%s: digest of %d bytes (%v), want %d", k.Name, len(d), err, sha256.Size)
			}
		}
	})
}
