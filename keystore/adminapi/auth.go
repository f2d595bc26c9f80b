package adminapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apierror"
)

// tokenSet holds the SHA-256 digests of the admin tokens. Comparing digests
// of equal length, against every token without stopping at a match, keeps
// the time a check takes independent of how much of a token was right and
// of which token matched.
type tokenSet [][sha256.Size]byte

func newTokenSet(tokens []string) tokenSet {
	var s tokenSet
	for _, t := range tokens {
		if t != "" {
			s = append(s, sha256.Sum256([]byte(t)))
		}
	}
	return s
}

func (s tokenSet) empty() bool { return len(s) == 0 }

// authorized reports whether header, an Authorization value, carries one of
// the tokens as a bearer token. The scheme is compared case-insensitively.
func (s tokenSet) authorized(header string) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return false
	}
	d := sha256.Sum256([]byte(token))
	match := 0
	for i := range s {
		match |= subtle.ConstantTimeCompare(d[:], s[i][:])
	}
	return match == 1
}

// CheckAdminTokens reports, without repeating any token, the first
// non-empty token shorter than [MinAdminTokenLen] characters.
func CheckAdminTokens(tokens []string) error {
	n := 0
	for _, t := range tokens {
		if t == "" {
			continue
		}
		n++
		if l := utf8.RuneCountInString(t); l < MinAdminTokenLen {
			return fmt.Errorf("admin token %d has %d characters; each needs at least %d (openssl rand -hex 32 makes one)", n, l, MinAdminTokenLen)
		}
	}
	return nil
}

var errUnauthenticated = &apierror.Error{
	Status:      http.StatusUnauthorized,
	Code:        "authentication_invalid",
	Message:     "invalid authentication",
	LongMessage: "the Authorization header must be Bearer followed by one of the admin tokens",
}
