package middleware

import (
	"fmt"
	"net/http"
	"strings"
)

// DefaultKeyLookup finds the key as a Bearer token, then in X-API-Key.
const DefaultKeyLookup = "header:Authorization:Bearer ,header:X-API-Key"

// KeyLookup says where a request carries its key, in the syntax of Echo's
// keyauth: comma-separated "<source>:<name>[:<prefix>]" with source header
// or query, for example "header:Authorization:Bearer ,query:api_key".
//
//   - A prefix is compared case-insensitively ("bearer x" works) and cut
//     off; surrounding spaces are trimmed from the key.
//   - "header:Authorization" without a prefix means "header:Authorization:Bearer ",
//     as in Echo's keyauth; "header:Authorization:" (an empty prefix) takes
//     the whole value.
//   - The sources are tried in order and the first one that carries a key
//     decides: a bad Bearer token is refused even when X-API-Key holds a
//     good key. A header whose value lacks the prefix (Authorization: Basic …)
//     carries no key.
//
// Keys are never read from the body, so Echo's form source is refused, as are
// cookie and param.
type KeyLookup []lookup

type lookup struct {
	source string // "header" or "query"
	name   string
	prefix string
}

// ParseKeyLookup parses s; "" means [DefaultKeyLookup].
func ParseKeyLookup(s string) (KeyLookup, error) {
	if strings.TrimSpace(s) == "" {
		s = DefaultKeyLookup
	}
	var out KeyLookup
	for _, part := range strings.Split(s, ",") {
		fields := strings.SplitN(strings.TrimLeft(part, " \t"), ":", 3)
		if len(fields) < 2 || strings.TrimSpace(fields[1]) == "" {
			return nil, fmt.Errorf("key lookup %q: want <source>:<name>[:<prefix>]", part)
		}
		l := lookup{source: fields[0], name: strings.TrimSpace(fields[1])}
		switch l.source {
		case "header":
			l.name = http.CanonicalHeaderKey(l.name)
			if len(fields) == 3 {
				l.prefix = fields[2]
			} else if l.name == "Authorization" {
				l.prefix = "Bearer "
			}
		case "query":
			if len(fields) == 3 {
				return nil, fmt.Errorf("key lookup %q: a query parameter takes no prefix", part)
			}
		case "form":
			return nil, fmt.Errorf("key lookup %q: keys are never read from the body; use header or query", part)
		default:
			return nil, fmt.Errorf("key lookup %q: source must be header or query", part)
		}
		out = append(out, l)
	}
	return out, nil
}

// MustParseKeyLookup is [ParseKeyLookup] for constant inputs; it panics on
// an error.
func MustParseKeyLookup(s string) KeyLookup {
	l, err := ParseKeyLookup(s)
	if err != nil {
		panic(err)
	}
	return l
}

// Key returns the first key the request carries, or "" when none.
func (kl KeyLookup) Key(r *http.Request) string {
	for _, l := range kl {
		var v string
		switch l.source {
		case "header":
			vs := r.Header[l.name]
			if len(vs) == 0 {
				continue
			}
			v = vs[0]
		case "query":
			v = r.URL.Query().Get(l.name)
		}
		if l.prefix != "" {
			if len(v) < len(l.prefix) || !strings.EqualFold(v[:len(l.prefix)], l.prefix) {
				continue
			}
			v = v[len(l.prefix):]
		}
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// Headers returns the names of the headers the lookup reads, so that a proxy
// can remove the credential before forwarding.
func (kl KeyLookup) Headers() []string {
	var out []string
	for _, l := range kl {
		if l.source == "header" {
			out = append(out, l.name)
		}
	}
	return out
}

// QueryParams returns the names of the query parameters the lookup reads.
func (kl KeyLookup) QueryParams() []string {
	var out []string
	for _, l := range kl {
		if l.source == "query" {
			out = append(out, l.name)
		}
	}
	return out
}
