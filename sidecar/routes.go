package sidecar

import (
	"fmt"
	"net/http"
	"path"
	"sort"
	"strings"
)

// rule is one --public or --require-scopes entry.
type rule struct {
	method string   // "" for any method
	prefix string   // a clean path starting with "/"
	scopes []string // nil for a public rule
	public bool
}

// router decides, per request, whether a key is needed and which scopes it
// must hold. Rules are sorted so that the first match is the one that wins:
// longest prefix, then a method-specific rule over an any-method one, then
// a scope rule over a public one.
type router struct{ rules []rule }

func newRouter(public, requireScopes []string) (*router, error) {
	rt := &router{}
	seen := map[string]string{}
	add := func(r rule, spec string) error {
		k := r.method + " " + r.prefix
		if r.public {
			k += " public"
		}
		if prev, ok := seen[k]; ok {
			return fmt.Errorf("%q repeats the route of %q", spec, prev)
		}
		seen[k] = spec
		rt.rules = append(rt.rules, r)
		return nil
	}
	for _, p := range public {
		prefix, err := parsePrefix(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("public %q: %w", p, err)
		}
		if err := add(rule{prefix: prefix, public: true}, p); err != nil {
			return nil, fmt.Errorf("public %w", err)
		}
	}
	for _, s := range requireScopes {
		r, err := parseRule(s)
		if err != nil {
			return nil, fmt.Errorf("require-scopes %q: %w", s, err)
		}
		if err := add(r, s); err != nil {
			return nil, fmt.Errorf("require-scopes %w", err)
		}
	}
	sort.SliceStable(rt.rules, func(i, j int) bool {
		a, b := rt.rules[i], rt.rules[j]
		if len(a.prefix) != len(b.prefix) {
			return len(a.prefix) > len(b.prefix)
		}
		if (a.method != "") != (b.method != "") {
			return a.method != ""
		}
		return !a.public && b.public
	})
	return rt, nil
}

// parseRule parses "METHOD /prefix=scope1,scope2"; METHOD may be "*" or
// left out for any method.
func parseRule(s string) (rule, error) {
	const want = "want 'METHOD /prefix=scope1,scope2' (METHOD optional, * for any)"
	eq := strings.LastIndexByte(s, '=')
	if eq < 0 {
		return rule{}, fmt.Errorf("no '=': %s", want)
	}
	var r rule
	fields := strings.Fields(s[:eq])
	switch len(fields) {
	case 1:
		r.prefix = fields[0]
	case 2:
		r.method, r.prefix = strings.ToUpper(fields[0]), fields[1]
		if r.method == "*" {
			r.method = ""
		} else if !isToken(r.method) {
			return rule{}, fmt.Errorf("method %q is not an HTTP method: %s", fields[0], want)
		}
	default:
		return rule{}, fmt.Errorf("%s", want)
	}
	prefix, err := parsePrefix(r.prefix)
	if err != nil {
		return rule{}, err
	}
	r.prefix = prefix
	for _, sc := range strings.Split(s[eq+1:], ",") {
		sc = strings.TrimSpace(sc)
		if !validScope(sc) {
			return rule{}, fmt.Errorf("scope %q must be 1 to 128 characters of [A-Za-z0-9:._/*-]: %s", sc, want)
		}
		r.scopes = append(r.scopes, sc)
	}
	return r, nil
}

func parsePrefix(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("the path prefix %q must start with /", p)
	}
	if cleanPath(p) != p {
		return "", fmt.Errorf("the path prefix %q is not a clean path (want %q)", p, cleanPath(p))
	}
	return p, nil
}

// match returns whether the request is on a public prefix, and otherwise
// the scopes its key must hold.
func (rt *router) match(method, p string, publicOK bool) (public bool, scopes []string) {
	for _, r := range rt.rules {
		if r.public && !publicOK {
			continue
		}
		if r.method != "" && r.method != method && !(r.method == http.MethodGet && method == http.MethodHead) {
			continue
		}
		if strings.HasPrefix(p, r.prefix) {
			return r.public, r.scopes
		}
	}
	return false, nil
}

// routePath returns the path that rules are matched against: the decoded
// path with backslashes read as slashes and dot segments resolved, as most
// upstreams will resolve them. publicOK is false when the path needed any
// such cleaning or has an encoded slash: public prefixes never apply to
// those, so a crafted path cannot reach a protected route through one.
// ok is false when a ".." segment survives cleaning ("..;" and the like,
// which some servers read as ".."): such a path cannot be matched safely.
func routePath(r *http.Request) (p string, publicOK, ok bool) {
	raw := r.URL.Path
	p = raw
	if strings.IndexByte(p, '\\') >= 0 {
		p = strings.ReplaceAll(p, `\`, "/")
	}
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	p = cleanPath(p)
	if strings.Contains(p, "/..") {
		return p, false, false
	}
	escaped := strings.ToLower(r.URL.EscapedPath())
	publicOK = p == raw && !strings.Contains(escaped, "%2f") && !strings.Contains(escaped, "%5c")
	return p, publicOK, true
}

// cleanPath is path.Clean that keeps a trailing slash.
func cleanPath(p string) string {
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

func validScope(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte(":._/*-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return s != ""
}
