package sidecar

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/keygate/keygate/keystore"
)

// The identity headers (docs/verification.md) that the proxy sends upstream and the
// forward-auth endpoint answers with.
const (
	HeaderKeyID      = "X-Api-Key-Id"      // the key's ID
	HeaderKeySubject = "X-Api-Key-Subject" // its subject
	HeaderKeyName    = "X-Api-Key-Name"    // its name
	HeaderKeyScopes  = "X-Api-Key-Scopes"  // its scopes joined by one space; empty when none
	HeaderKeyClaims  = "X-Api-Key-Claims"  // its claims as compact JSON; absent when null
)

// HeaderRequiredScopes is the request header in which a proxy tells the
// forward-auth endpoint which scopes a route needs, comma or space
// separated.
const HeaderRequiredScopes = "X-Required-Scopes"

// Spoofable reports whether a header of this name, sent by a client, must
// never reach an upstream: what [NewProxy] removes, and what other ways in
// (Envoy's gRPC ext_authz) must have the proxy remove. See spoofable.
func Spoofable(name string) bool { return spoofable(name) }

// SetIdentity sets the identity headers of key on h, as forward-auth
// answers them and the proxy sends them upstream: X-Api-Key-Claims is
// deleted for a key without claims, values that cannot travel in a header
// are cleaned. It replaces any value already there.
func SetIdentity(h http.Header, key *keystore.APIKey) { setIdentity(h, key) }

// spoofable reports whether a header of this name, sent by a client, must
// never reach the upstream: an identity header (X-Api-Key-*), a
// forwarding header (X-Forwarded-*, Forwarded, X-Real-Ip, True-Client-Ip),
// or a header with which some frameworks replace the path they route
// (X-Original-Url, X-Rewrite-Url). Names are compared with "_" read as
// "-" and case folded, as CGI, WSGI and Rack read them: X_Api_Key_Subject
// reaches such an application as X-Api-Key-Subject. X-Api-Key itself, a
// credential header, does not match.
func spoofable(name string) bool {
	for _, p := range spoofablePrefixes {
		if len(name) > len(p) && headerNameIs(name[:len(p)], p) {
			return true
		}
	}
	for _, n := range spoofableNames {
		if headerNameIs(name, n) {
			return true
		}
	}
	return false
}

var (
	spoofablePrefixes = []string{"X-Api-Key-", "X-Forwarded-"}
	spoofableNames    = []string{"Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Original-Url", "X-Rewrite-Url"}
)

// headerNameIs reports whether the header names a and b are the same when
// case is folded and "_" is read as "-".
func headerNameIs(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if foldHeaderByte(a[i]) != foldHeaderByte(b[i]) {
			return false
		}
	}
	return true
}

func foldHeaderByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// setIdentity sets the identity headers of key on h, replacing any value
// already there.
func setIdentity(h http.Header, key *keystore.APIKey) {
	// One backing array for the five values: this runs on every request.
	v := [5]string{
		headerValue(key.ID),
		headerValue(key.Subject),
		headerValue(key.Name),
		headerValue(strings.Join(key.Scopes, " ")),
		claimsValue(key.Claims),
	}
	vs := v[:]
	h[HeaderKeyID] = vs[0:1:1]
	h[HeaderKeySubject] = vs[1:2:2]
	h[HeaderKeyName] = vs[2:3:3]
	h[HeaderKeyScopes] = vs[3:4:4]
	if v[4] != "" {
		h[HeaderKeyClaims] = vs[4:5:5]
	} else {
		delete(h, HeaderKeyClaims)
	}
}

// claimsValue returns claims as compact JSON, or "" when they are null.
func claimsValue(claims json.RawMessage) string {
	claims = bytes.TrimSpace(claims)
	if len(claims) == 0 || string(claims) == "null" {
		return ""
	}
	if !isCompact(claims) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, claims); err == nil {
			claims = buf.Bytes()
		}
	}
	// JSON allows a raw DEL inside a string; a header does not. \u007f is
	// the same JSON value.
	if bytes.IndexByte(claims, 0x7f) >= 0 {
		claims = bytes.ReplaceAll(claims, []byte{0x7f}, []byte(`\u007f`))
	}
	return string(claims)
}

// isCompact reports whether the JSON b has no whitespace outside its
// strings. The store keeps claims compacted, so the check, which allocates
// nothing, spares nearly every request a json.Compact.
func isCompact(b []byte) bool {
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\r' || c == '\n'):
			return false
		}
	}
	return true
}

// headerValue returns s unchanged when it can travel in an HTTP header, and
// otherwise with every control character (other than tab) and every invalid
// UTF-8 byte replaced by U+FFFD: names and subjects may hold any UTF-8, a
// header field may not.
func headerValue(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if b := s[i]; (b < ' ' && b != '\t') || b == 0x7f {
			clean = false
			break
		}
	}
	if clean && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if (r < ' ' && r != '\t') || r == 0x7f {
			r = utf8.RuneError
		}
		b.WriteRune(r) // an invalid byte is already utf8.RuneError
	}
	return b.String()
}
