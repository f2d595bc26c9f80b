package keystore

import (
	"encoding/hex"
	"errors"
	"hash/crc32"
	"regexp"
	"strings"
	"testing"
)

// wellFormed is an oracle for parseSecret written from docs/api.md, not
// from the code: <prefix><32 lowercase hex><43 base62><6 base62 of the
// CRC32 (IEEE) of everything before, most significant digit first>.
func wellFormed(prefix, secret string) bool {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `[0-9a-f]{32}[0-9A-Za-z]{43}[0-9A-Za-z]{6}$`)
	if !re.MatchString(secret) {
		return false
	}
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	head, tail := secret[:len(secret)-6], secret[len(secret)-6:]
	var n uint64
	for i := 0; i < len(tail); i++ {
		n = n*62 + uint64(strings.IndexByte(digits, tail[i]))
	}
	return n == uint64(crc32.ChecksumIEEE([]byte(head)))
}

// A well-formed secret under "ak_" (its key need not exist), and one under
// another prefix; committed so that the seeds do not depend on crypto/rand.
const (
	seedSecret      = "ak_0123456789abcdef0123456789abcdefAbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCDEFG3rZOCM"
	seedOtherPrefix = "acme_live_00000000000000000000000000000000zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz1SkHkx"
)

func TestSeedSecretsAreWellFormed(t *testing.T) {
	for prefix, s := range map[string]string{"ak_": seedSecret, "acme_live_": seedOtherPrefix} {
		if _, err := parseSecret(prefix, s); err != nil || !wellFormed(prefix, s) {
			t.Fatalf("seed %q: parseSecret %v, oracle %v", s, err, wellFormed(prefix, s))
		}
	}
}

// FuzzParseSecret: parseSecret never panics, reports only ErrMalformed,
// and accepts exactly the secrets the oracle accepts, returning the ID
// they carry.
func FuzzParseSecret(f *testing.F) {
	for _, s := range []string{
		seedSecret, seedOtherPrefix, "", "ak_", "ak_x", strings.Repeat("a", 84),
		seedSecret[:len(seedSecret)-1] + "p", strings.ToUpper(seedSecret), seedSecret + "\x00",
		"ak_0123456789abcdef0123456789abcdefAbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCDEFG3rZOC\xff",
	} {
		f.Add("ak_", s)
	}
	f.Add("acme_live_", seedOtherPrefix)
	f.Add("X_", "X_"+seedSecret[3:])
	f.Fuzz(func(t *testing.T, prefix, secret string) {
		if !ValidPrefix(prefix) {
			prefix = "ak_"
		}
		idHex, err := parseSecret(prefix, secret)
		want := wellFormed(prefix, secret)
		switch {
		case err != nil && !errors.Is(err, ErrMalformed):
			t.Fatalf("parseSecret(%q) = %v, want ErrMalformed or nil", secret, err)
		case err != nil && want:
			t.Fatalf("parseSecret refused the well-formed %q", secret)
		case err == nil && !want:
			t.Fatalf("parseSecret accepted %q, which is not well-formed", secret)
		case err == nil && (idHex != secret[len(prefix):len(prefix)+32] || !ValidID(idPrefix+idHex)):
			t.Fatalf("parseSecret(%q) returned the ID %q", secret, idHex)
		}
	})
}

// FuzzSecretRoundTrip: a fresh secret for any ID and prefix parses back to
// its ID, and changing any one byte of it to anything else makes it
// malformed (CRC32 catches every error of up to 32 bits in a row).
func FuzzSecretRoundTrip(f *testing.F) {
	f.Add([]byte("0123456789abcdef"), "ak_", uint8(0), byte('x'))
	f.Add([]byte{}, "acme_live_", uint8(200), byte('A'))
	f.Add([]byte{0xff, 0xff, 0xff}, "_", uint8(83), byte('0'))
	f.Fuzz(func(t *testing.T, raw []byte, prefix string, pos uint8, c byte) {
		if !ValidPrefix(prefix) {
			prefix = "ak_"
		}
		var b [16]byte
		copy(b[:], raw)
		id := idPrefix + hex.EncodeToString(b[:])
		secret, err := newSecret(prefix, id)
		if err != nil {
			t.Fatal(err)
		}
		if !wellFormed(prefix, secret) {
			t.Fatalf("newSecret made %q, which is not well-formed", secret)
		}
		idHex, err := parseSecret(prefix, secret)
		if err != nil || idPrefix+idHex != id {
			t.Fatalf("parseSecret(newSecret(%s)) = %q, %v", id, idHex, err)
		}
		i := int(pos) % len(secret)
		if secret[i] == c {
			return
		}
		mutated := secret[:i] + string(c) + secret[i+1:]
		if _, err := parseSecret(prefix, mutated); !errors.Is(err, ErrMalformed) {
			t.Fatalf("changing byte %d of %q to %q: parseSecret = %v, want ErrMalformed", i, secret, c, err)
		}
	})
}
