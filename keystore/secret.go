package keystore

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"sync"
	"unsafe"
)

// A secret reads <prefix><id hex><random><checksum>:
//
//	ak_ 3f9c…(32 hex) Zq8…(43 base62) 0aB3xY(6 base62)
//
// The 32 hex characters are the key ID without its "ak_", so verification is
// one lookup by ID. The 43 base62 characters carry 256 bits from crypto/rand.
// The checksum is CRC32 (IEEE) of everything before it, in base62, so that a
// typo or a random string is refused without touching Redis.
const (
	idPrefix    = "ak_" // of key IDs, whatever the secret prefix
	idHexLen    = 32
	randomLen   = 43 // 43 × log2(62) ≈ 256.03 bits
	checksumLen = 6  // 62^6 > 2^32
	bodyLen     = idHexLen + randomLen + checksumLen

	base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// newID returns a fresh key ID: "ak_" and 32 lowercase hex characters.
func newID() (string, error) {
	var b [idHexLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return idPrefix + hex.EncodeToString(b[:]), nil
}

// ValidID reports whether id has the form of a key ID: "ak_" and 32
// lowercase hex characters.
func ValidID(id string) bool {
	if len(id) != len(idPrefix)+idHexLen || id[:len(idPrefix)] != idPrefix {
		return false
	}
	for i := len(idPrefix); i < len(id); i++ {
		if !isLowerHex(id[i]) {
			return false
		}
	}
	return true
}

// ValidPrefix reports whether p can prefix secrets: letters, digits and
// underscores, ending in an underscore, at most 32 characters.
func ValidPrefix(p string) bool {
	if p == "" || len(p) > 32 || p[len(p)-1] != '_' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if !isAlnum(p[i]) && p[i] != '_' {
			return false
		}
	}
	return true
}

// newSecret returns a secret for the key id under prefix.
func newSecret(prefix, id string) (string, error) {
	b := make([]byte, 0, len(prefix)+bodyLen)
	b = append(b, prefix...)
	b = append(b, id[len(idPrefix):]...)
	// Rejection sampling keeps every base62 character uniform: 248 = 4 × 62.
	var buf [64]byte
	for n := 0; n < randomLen; {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		for _, c := range buf {
			if c < 248 && n < randomLen {
				b = append(b, base62[c%62])
				n++
			}
		}
	}
	b = appendChecksum(b, crc32.ChecksumIEEE(b))
	return string(b), nil
}

func appendChecksum(b []byte, sum uint32) []byte {
	var c [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		c[i] = base62[sum%62]
		sum /= 62
	}
	return append(b, c[:]...)
}

// parseSecret checks the form and checksum of secret, without any I/O, and
// returns the 32 hex characters of its key ID (a substring of secret). It
// reports [ErrMalformed] for anything else.
func parseSecret(prefix, secret string) (idHex string, err error) {
	if len(secret) != len(prefix)+bodyLen || secret[:len(prefix)] != prefix {
		return "", ErrMalformed
	}
	body := secret[len(prefix):]
	for i := 0; i < idHexLen; i++ {
		if !isLowerHex(body[i]) {
			return "", ErrMalformed
		}
	}
	for i := idHexLen; i < bodyLen; i++ {
		if !isAlnum(body[i]) {
			return "", ErrMalformed
		}
	}
	var want [checksumLen]byte
	sum := crc32.Update(0, crc32.IEEETable, stringBytes(secret[:len(secret)-checksumLen]))
	if string(appendChecksum(want[:0], sum)) != secret[len(secret)-checksumLen:] {
		return "", ErrMalformed
	}
	return body[:idHexLen], nil
}

// digester turns secrets into the digests Redis stores: HMAC-SHA-256 under
// a key when one is configured, SHA-256 otherwise. Secrets carry 256 random
// bits, so a fast hash is as safe as a slow one and keeps verification cheap.
type digester struct {
	pool *sync.Pool // of *hmacState; nil for plain SHA-256
}

// hmacState is a reusable HMAC with room for its sum, so that summing
// allocates nothing.
type hmacState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

func newDigester(hmacKey []byte) digester {
	if len(hmacKey) == 0 {
		return digester{}
	}
	key := append([]byte(nil), hmacKey...)
	return digester{pool: &sync.Pool{New: func() any { return &hmacState{h: hmac.New(sha256.New, key)} }}}
}

// digests are a store's digesters, by the ID of the hash key a record
// names ([Options.HashKeys]); "" is the legacy one (Options.HashKey, or
// plain SHA-256) and importedHashKey plain SHA-256.
type digests struct {
	currentID string // of new records
	current   digester
	others    map[string]digester
}

// importedHashKey names, in a record, the plain SHA-256 digest of an
// imported secret.
const importedHashKey = "sha256"

func newDigests(legacy []byte, keys []HashKey) digests {
	d := digests{current: newDigester(legacy), others: map[string]digester{importedHashKey: {}}}
	if len(keys) == 0 {
		return d
	}
	d.others[""] = d.current
	d.currentID, d.current = keys[0].ID, newDigester(keys[0].Secret)
	for _, k := range keys[1:] {
		d.others[k.ID] = newDigester(k.Secret)
	}
	return d
}

// match reports whether stored is the digest of secret under the hash key
// that id names, comparing in constant time; false when no such key is
// configured.
func (d *digests) match(id, stored, secret string) bool {
	g := d.current
	if id != d.currentID {
		var ok bool
		if g, ok = d.others[id]; !ok {
			return false
		}
	}
	sum := g.sum(secret)
	return digestsEqual(sum[:], stringBytes(stored))
}

func (d digester) sum(secret string) [sha256.Size]byte {
	if d.pool == nil {
		return sha256.Sum256(stringBytes(secret))
	}
	st := d.pool.Get().(*hmacState)
	st.h.Reset()
	st.h.Write(stringBytes(secret))
	st.h.Sum(st.sum[:0])
	out := st.sum
	d.pool.Put(st)
	return out
}

// digestsEqual compares two digests in constant time.
func digestsEqual(a, b []byte) bool {
	return subtle.ConstantTimeCompare(a, b) == 1
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// stringBytes returns the bytes of s without copying. The result is only
// handed to hash functions, which read it and never keep it.
func stringBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
