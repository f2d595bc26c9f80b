package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Imported keys (docs/verification.md, "Imported keys"): keys brought from
// another system, which keeps only a SHA-256 of each secret. Their secrets
// keep their foreign form, with no key ID inside, so a verifier finds
// them through an index: <ns>:import:<the first 16 bytes of the
// secret's SHA-256, in hex> holds the key ID. Verifying one costs that
// lookup and the record's load (which the cache spares), at most two
// round trips; a keygate secret never consults the index.
//
// A string in neither form must not cost a round trip where nothing was
// ever imported: <ns>:imports is set by the first import, which also
// publishes the news to every verifier through the invalidation protocol
// before it answers. A verifier that has not read the flag yet, or may
// have missed the news (its cache was emptied for a gap), looks foreign
// secrets up until it has read it again; a verifier without a cache, which
// has no subscription, reads it every second.

// maxForeignSecretLen bounds the secrets looked up among imported keys:
// a longer one is malformed without a lookup.
const maxForeignSecretLen = 512

// Import stores a key whose secret was issued by another system and
// returns it, without a secret: the holder keeps the one they have, in
// its own form. Its digest stays the other system's SHA-256 until the key
// first verifies, when it is re-digested under the current hash key.
//
// It reports a [*ValidationError] for a bad body, a hash that is not
// SHA-256, or a secret already imported into a key that still exists.
func (s *Store) Import(ctx context.Context, p ImportParams) (*APIKey, error) {
	digest, err := importDigest(p.Hash)
	if err != nil {
		return nil, err
	}
	if err := validateCreate(&p.CreateParams); err != nil {
		return nil, err
	}
	k, err := s.newKey(p.CreateParams)
	if err != nil {
		return nil, err
	}
	index := s.names.imported(hex.EncodeToString(digest[:16]))
	prev, err := s.rdb.Get(ctx, index).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, s.unavailable(opImport, "importing a key", err)
	}
	if prev != "" {
		switch _, err := s.load(ctx, prev, opImport); {
		case err == nil:
			return nil, invalid("hash", "is the secret of the key %s, already imported", prev)
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	// The record first, then the index entry that makes it verifiable.
	if err := s.add(ctx, opImport, &record{key: k, digest: string(digest[:]), hashKey: importedHashKey}); err != nil {
		return nil, err
	}
	if err := s.rdb.Set(ctx, index, k.ID, 0).Err(); err != nil {
		return nil, s.unavailable(opImport, "indexing imported key "+k.ID, err)
	}
	first, err := s.rdb.SetNX(ctx, s.names.imports(), "1", 0).Result()
	if err != nil {
		return nil, s.unavailable(opImport, "flagging imported keys", err)
	}
	s.imports.learn(true)
	if first {
		// Verifiers that skip foreign secrets must know before this
		// returns: the same protocol as a revoke.
		if err := s.changeOf(ctx, invTarget{head: targetImports}, opImport, "announcing imported keys", func() error { return nil }); err != nil {
			return nil, err
		}
	}
	out := *k
	out.Expired = k.ExpiredAt(s.now())
	return &out, nil
}

// importDigest checks the hash and returns its 32 bytes.
func importDigest(h ImportHash) ([32]byte, error) {
	var d [32]byte
	if h.Algorithm != "sha256" {
		return d, invalid("hash", `.algorithm must be "sha256"`)
	}
	b, err := hex.DecodeString(h.Value)
	if err != nil || len(b) != len(d) {
		return d, invalid("hash", ".value must be 64 hexadecimal characters: the SHA-256 of the secret")
	}
	copy(d[:], b)
	return d, nil
}

// importedID returns the 32 hex characters of the ID of the imported key
// whose secret this may be, in one round trip, or [ErrMalformed] when no
// imported key has it. When Redis cannot be reached it reports
// [ErrUnavailable] only where keys are known to be imported.
func (s *Store) importedID(ctx context.Context, secret string) (string, error) {
	if len(secret) > maxForeignSecretLen || strings.ContainsFunc(secret, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return "", ErrMalformed
	}
	sum := sha256.Sum256(stringBytes(secret))
	id, err := s.rdb.Get(ctx, s.names.imported(hex.EncodeToString(sum[:16]))).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", ErrMalformed
	case err != nil && !s.imports.some():
		// Not known to be worth the lookup (a verifier that has not read
		// the flag yet): a string in neither form, as without imports.
		return "", ErrMalformed
	case err != nil:
		return "", s.unavailable(opVerify, "looking up an imported key", err)
	case !ValidID(id):
		return "", ErrMalformed
	}
	return id[len(idPrefix):], nil
}

// importState is what a store knows of imported keys in its namespace.
type importState struct{ v atomic.Int32 }

const (
	importsUnknown int32 = iota // not read yet, or news may have been missed
	importsNone
	importsSome
)

// mayExist reports whether a foreign secret is worth a lookup.
func (s *importState) mayExist() bool { return s.v.Load() != importsNone }

func (s *importState) known() bool { return s.v.Load() != importsUnknown }

func (s *importState) some() bool { return s.v.Load() == importsSome }

// learn records what the flag in Redis, or the news of an import, said.
// Imported keys, once there, are never forgotten: "none" is learnt only
// over "unknown", so that a read that raced the news cannot undo it.
func (s *importState) learn(some bool) {
	if some {
		s.v.Store(importsSome)
	} else {
		s.v.CompareAndSwap(importsUnknown, importsNone)
	}
}

// forget makes "none" unknown again: news may have been missed.
func (s *importState) forget() { s.v.CompareAndSwap(importsNone, importsUnknown) }

// pollImports reads the flag of imported keys.
func (v *Verifier) pollImports() {
	ctx, cancel := context.WithTimeout(v.bg, v.opts.SubscriptionStale)
	defer cancel()
	n, err := v.store.rdb.Exists(ctx, v.store.names.imports()).Result()
	if err != nil {
		v.log.Debug("reading whether keys were imported", "instance", v.id, "err", err)
		return
	}
	v.store.imports.learn(n > 0)
}

// watchImports reads the flag of imported keys every second, for a
// verifier without a cache: it has no subscription to hear of a first
// import.
func (v *Verifier) watchImports() {
	defer v.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		v.pollImports()
		select {
		case <-v.stop:
			return
		case <-t.C:
		}
	}
}
