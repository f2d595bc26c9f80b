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

// tokenSet holds the SHA-256 digests of the admin tokens, with their names
// and roles. Comparing digests of equal length, against every token
// without stopping at a match, keeps the time a check takes independent of
// how much of a token was right and of which token matched.
type tokenSet []adminToken

type adminToken struct {
	digest [sha256.Size]byte
	name   string
	role   Role
}

func newTokenSet(tokens []Token) tokenSet {
	var s tokenSet
	for _, t := range tokens {
		s = append(s, adminToken{digest: sha256.Sum256([]byte(t.Token)), name: t.Name, role: t.Role})
	}
	return s
}

func (s tokenSet) empty() bool { return len(s) == 0 }

// authorized returns the token that header, an Authorization value,
// carries as a bearer token; nil when it carries none of them. The scheme
// is compared case-insensitively.
func (s tokenSet) authorized(header string) *adminToken {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil
	}
	d := sha256.Sum256([]byte(token))
	found := -1
	for i := range s {
		eq := subtle.ConstantTimeCompare(d[:], s[i].digest[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return nil
	}
	return &s[found]
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
