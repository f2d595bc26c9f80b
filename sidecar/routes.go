package sidecar

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keygate/keygate/keystore"
)

// rule is one --public or --require-scopes entry.
type rule struct {
	method string   // "" for any method
	prefix string   // a clean, decoded path starting with "/"
	folded string   // prefix case-folded (foldPath): what scope rules compare
	sent   string   // prefix as a client sends it, percent-encoded
	sentF  string   // sent, case-folded
	scopes []string // nil for a public rule
	public bool
	cost   int64 // of a --cost rule; 0 for the others
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
		k := r.method + " " + r.folded
		if r.public {
			k = r.method + " " + r.prefix + " public"
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
		if err := add(newRule("", prefix, nil), p); err != nil {
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

// newRule returns the rule for method and prefix; nil scopes make it a
// public rule.
func newRule(method, prefix string, scopes []string) rule {
	sent := (&url.URL{Path: prefix}).EscapedPath()
	return rule{
		method: method,
		prefix: prefix,
		folded: foldPath(prefix),
		sent:   sent,
		sentF:  foldPath(sent),
		scopes: scopes,
		public: scopes == nil,
	}
}

// parseRule parses "METHOD /prefix=scope1,scope2"; METHOD may be "*" or
// left out for any method.
func parseRule(s string) (rule, error) {
	const want = "want 'METHOD /prefix=scope1,scope2' (METHOD optional, * for any)"
	method, prefix, value, err := parseRoute(s, want)
	if err != nil {
		return rule{}, err
	}
	var scopes []string
	for _, sc := range strings.Split(value, ",") {
		sc = strings.TrimSpace(sc)
		if !validScope(sc) {
			return rule{}, fmt.Errorf("scope %q must be 1 to 128 characters of [A-Za-z0-9:._/*-]: %s", sc, want)
		}
		scopes = append(scopes, sc)
	}
	return newRule(method, prefix, scopes), nil
}

// parseRoute splits "METHOD /prefix=value" (METHOD optional, "*" for
// any) and checks the method and the prefix; want is the error's hint.
func parseRoute(s, want string) (method, prefix, value string, err error) {
	eq := strings.LastIndexByte(s, '=')
	if eq < 0 {
		return "", "", "", fmt.Errorf("no '=': %s", want)
	}
	fields := strings.Fields(s[:eq])
	switch len(fields) {
	case 1:
		prefix = fields[0]
	case 2:
		method, prefix = strings.ToUpper(fields[0]), fields[1]
		if method == "*" {
			method = ""
		} else if !isToken(method) {
			return "", "", "", fmt.Errorf("method %q is not an HTTP method: %s", fields[0], want)
		}
	default:
		return "", "", "", fmt.Errorf("%s", want)
	}
	if prefix, err = parsePrefix(prefix); err != nil {
		return "", "", "", err
	}
	return method, prefix, strings.TrimSpace(s[eq+1:]), nil
}

// newCostRouter returns the router of --cost rules, each "METHOD
// /prefix=N": a request's cost is that of the rule its path matches, the
// highest over every reading of the path; 1 when none matches. Cost rules
// match as scope rules do (case-insensitively, ";" parameters and all).
func newCostRouter(costs []string) (*router, error) {
	const want = "want 'METHOD /prefix=N' (METHOD optional, * for any; N from 1 to 1000000)"
	rt := &router{}
	seen := map[string]string{}
	for _, c := range costs {
		method, prefix, value, err := parseRoute(c, want)
		if err != nil {
			return nil, fmt.Errorf("cost %q: %w", c, err)
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 1 || n > keystore.MaxCost {
			return nil, fmt.Errorf("cost %q: %q is not a cost: %s", c, value, want)
		}
		r := newRule(method, prefix, []string{})
		r.cost = n
		k := r.method + " " + r.folded
		if prev, ok := seen[k]; ok {
			return nil, fmt.Errorf("cost %q repeats the route of %q", c, prev)
		}
		seen[k] = c
		rt.rules = append(rt.rules, r)
	}
	sort.SliceStable(rt.rules, func(i, j int) bool {
		a, b := rt.rules[i], rt.rules[j]
		if len(a.prefix) != len(b.prefix) {
			return len(a.prefix) > len(b.prefix)
		}
		return a.method != "" && b.method == ""
	})
	return rt, nil
}

func parsePrefix(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("the path prefix %q must start with /", p)
	}
	if strings.ContainsAny(p, `;%\`) {
		return "", fmt.Errorf(`the path prefix %q must be a decoded path without ";", "%%" or "\"`, p)
	}
	if cleanPath(p) != p {
		return "", fmt.Errorf("the path prefix %q is not a clean path (want %q)", p, cleanPath(p))
	}
	return p, nil
}

// match returns the rule that wins for a request with method whose path
// reads as p (as sent when encoded is true, decoded otherwise), or nil.
// Scope rules compare case-insensitively, and one whose prefix ends in "/"
// also covers the path without that slash ("/admin/" covers "/admin"):
// an upstream may route either way, and the stricter reading is kept.
// Public rules compare exactly: a path is public only as written.
func (rt *router) match(method, p, folded string, encoded bool) *rule {
	for i := range rt.rules {
		r := &rt.rules[i]
		if r.method != "" && r.method != method && !(r.method == http.MethodGet && method == http.MethodHead) {
			continue
		}
		if r.public {
			prefix := r.prefix
			if encoded {
				prefix = r.sent
			}
			if strings.HasPrefix(p, prefix) {
				return r
			}
			continue
		}
		prefix := r.folded
		if encoded {
			prefix = r.sentF
		}
		if strings.HasPrefix(folded, prefix) || (len(prefix) > 1 && prefix[len(prefix)-1] == '/' && folded == prefix[:len(prefix)-1]) {
			return r
		}
	}
	return nil
}

// need is what the rules ask of a request: nothing (public), or a key
// holding scopes.
type need struct {
	public bool
	scopes []string
	cost   int64 // the highest of the cost rules matched; 0 when none
}

func (n need) equal(o need) bool {
	return n.public == o.public && slices.Equal(n.scopes, o.scopes) && n.cost == o.cost
}

// add makes n the stricter of n and what rule r (nil: no rule) asks: a
// request is public only if every reading of its path is, and needs the
// scopes of every reading.
func (n *need) add(r *rule) {
	if r != nil && r.public {
		return
	}
	n.public = false
	if r == nil {
		return
	}
	n.cost = max(n.cost, r.cost)
	for _, s := range r.scopes {
		if !slices.Contains(n.scopes, s) {
			n.scopes = append(n.scopes, s)
		}
	}
}

// errAmbiguousPath reports a path whose meaning for the rules depends on
// how the upstream decodes it.
type errAmbiguousPath struct{ reason string }

func (e errAmbiguousPath) Error() string { return e.reason }

// maxReadPath bounds the length of a path whose readings are tried (up to
// 72 of them): longer ones, rare in practice, are refused rather than let
// a client spend the sidecar's CPU. A plain path has one reading and no
// bound.
const maxReadPath = 2048

// methodOverrides are the request headers with which common frameworks
// (Rails, Express's method-override, Symfony, Laravel) let a client
// replace the request's method.
var methodOverrides = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// route decides what the request needs, for every way an upstream may
// read its path: as sent or decoded once, with or without ";" parameters,
// with repeated slashes merged or kept, with dot segments resolved or
// not, and case-insensitively for scope rules (see [readings]). The
// request needs the strictest of these: it is public only when every
// reading is, and needs every scope any reading asks for; the same for
// the method of an override header. A path whose reading also depends on
// the decoder (encoded slashes, escapes that decode to an escape, dot
// segments or ";" that appear only after decoding, control characters or
// invalid UTF-8 once decoded) is refused with an error when that changes
// what the request needs, and so is a path of more than [maxReadPath]
// bytes that has more than one reading.
func (rt *router) route(r *http.Request) (need, error) {
	if len(rt.rules) == 0 {
		return need{}, nil
	}
	methods := []string{r.Method}
	for _, h := range methodOverrides {
		for _, v := range r.Header.Values(h) {
			if m := strings.ToUpper(strings.TrimSpace(v)); m != "" && !slices.Contains(methods, m) {
				methods = append(methods, m)
			}
		}
	}
	p := r.URL.EscapedPath() // what the upstream receives, as Go sends it
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	if plainPath(p) {
		folded := p
		if hasUpper(p) {
			folded = strings.ToLower(p)
		}
		n := need{public: true}
		for _, m := range methods {
			n.add(rt.match(m, p, folded, false))
		}
		return n, nil
	}
	if len(p) > maxReadPath {
		return need{}, errAmbiguousPath{fmt.Sprintf("a request path over %d bytes that holds escapes, \";\", \"//\" or dot segments is not read", maxReadPath)}
	}
	base, all := need{public: true}, need{public: true}
	rds := readings(p)
	segs, ok := splitSegments(p, rds[len(rds)-1].decode)
	if !ok {
		return need{}, errAmbiguousPath{"the request path holds a control character or invalid UTF-8 once decoded"}
	}
	var buf []string
	for _, rd := range rds {
		var q string
		q, buf = rd.read(segs, buf)
		folded := foldPath(q)
		for _, m := range methods {
			rl := rt.match(m, q, folded, rd.decode == 0)
			all.add(rl)
			if !rd.decoderDependent() {
				base.add(rl)
			}
		}
	}
	sort.Strings(base.scopes)
	sort.Strings(all.scopes)
	if !base.equal(all) {
		return need{}, errAmbiguousPath{"the request path means different things to different decoders (an encoded slash or backslash, an escaped escape such as %252e, or a dot segment or ';' that appears only once decoded)"}
	}
	return base, nil
}

// plainPath reports whether every reading of p is p itself: no escape, no
// ";", no empty segment and no dot segment.
func plainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '%', ';':
			return false
		case '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return false
			}
		}
	}
	return true
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// reading is one way an upstream may turn a request path into the path it
// routes.
type reading struct {
	decode int  // 0: as sent; 1: percent-decoded once; 2: twice
	strip  bool // ";" and what follows it are removed from each segment (Tomcat, Spring, Jetty)
	merge  bool // repeated slashes are one (nginx, Spring, Envoy's merge_slashes)
	dots   bool // "." and ".." segments are resolved (RFC 3986, most servers)

	// Decoder-dependent: these readings decide whether a path is refused.
	slashes bool // decoded %2F and %5C separate segments
	late    bool // dots and ";" are recognised after decoding too (%2e%2e, %3b)
}

func (rd reading) decoderDependent() bool { return rd.decode == 2 || rd.slashes || rd.late }

// readings returns the readings of p worth trying: only those that can
// differ, given what p holds.
func readings(p string) []reading {
	hasPct := strings.IndexByte(p, '%') >= 0
	opts := func(present bool) []bool {
		if present {
			return []bool{false, true}
		}
		return []bool{false}
	}
	decodes := []int{0}
	if hasPct {
		decodes = append(decodes, 1)
		if strings.Contains(p, "%25") {
			decodes = append(decodes, 2)
		}
	}
	var out []reading
	for _, decode := range decodes {
		for _, strip := range opts(strings.IndexByte(p, ';') >= 0 || hasPct) {
			for _, merge := range opts(strings.Contains(p, "//") || hasPct) {
				for _, dots := range opts(strings.Contains(p, "/.") || hasPct) {
					for _, slashes := range opts(decode > 0) {
						for _, late := range opts(decode > 0) {
							out = append(out, reading{decode: decode, strip: strip, merge: merge, dots: dots, slashes: slashes, late: late})
						}
					}
				}
			}
		}
	}
	return out
}

// segment is one segment of a path in each form a reading may take of it:
// forms[strip][decode], with ";" parameters cut when strip is 1, and
// percent-decoded decode times.
type segment struct{ forms [2][3]string }

// splitSegments splits p into its segments and decodes each up to
// decodes times, once for all readings. ok is false when a decoded
// segment holds a control character or invalid UTF-8, which some servers
// truncate or misread.
func splitSegments(p string, decodes int) (segs []segment, ok bool) {
	raw := strings.Split(p[1:], "/")
	segs = make([]segment, len(raw))
	for i, s := range raw {
		for strip := range 2 {
			f := s
			if strip == 1 {
				f, _, _ = strings.Cut(s, ";")
			}
			segs[i].forms[strip][0] = f
			for d := 1; d <= decodes; d++ {
				if f = unescape(f); !validSegment(f) {
					return nil, false
				}
				segs[i].forms[strip][d] = f
			}
		}
	}
	return segs, true
}

// read returns the path rd reads in segs, using buf (returned for reuse)
// for its segments. Within a segment, a decoded "/" or "\" that does not
// separate segments is written %2F or %5C, so that it cannot pass for a
// separator.
func (rd reading) read(segs []segment, buf []string) (string, []string) {
	out := buf[:0]
	strip := 0
	if rd.strip {
		strip = 1
	}
	for i := range segs {
		last := i == len(segs)-1
		sent := segs[i].forms[strip][0]
		rawDot := sent == "." || sent == ".."
		d := segs[i].forms[strip][rd.decode]
		parts := []string{d}
		if rd.slashes && strings.ContainsAny(d, `/\`) {
			parts = strings.FieldsFunc(d, func(c rune) bool { return c == '/' || c == '\\' })
			if len(parts) == 0 || strings.HasSuffix(d, "/") || strings.HasSuffix(d, `\`) {
				parts = append(parts, "")
			}
			if strings.HasPrefix(d, "/") || strings.HasPrefix(d, `\`) {
				parts = append([]string{""}, parts...)
			}
		}
		for j, q := range parts {
			lastPart := last && j == len(parts)-1
			if rd.late && rd.strip {
				q, _, _ = strings.Cut(q, ";")
			}
			dot := rd.dots && ((len(parts) == 1 && rawDot) || (rd.late && (q == "." || q == "..")))
			switch {
			case dot && q == "..":
				if len(out) > 0 {
					out = out[:len(out)-1]
				}
				if lastPart {
					out = append(out, "")
				}
			case dot:
				if lastPart {
					out = append(out, "")
				}
			case q == "" && rd.merge && !lastPart:
			default:
				if rd.decode > 0 && !rd.slashes && strings.ContainsAny(q, `/\`) {
					q = strings.ReplaceAll(strings.ReplaceAll(q, "/", "%2F"), `\`, "%5C")
				}
				out = append(out, q)
			}
		}
	}
	return "/" + strings.Join(out, "/"), out
}

// unescape percent-decodes s once; an escape that is not one is kept as
// it is.
func unescape(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// validSegment reports whether a decoded segment is valid UTF-8 without
// control characters.
func validSegment(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return utf8.ValidString(s)
}

// foldPath folds p for case-insensitive comparison: ASCII letters are
// lowered, and so is every other letter that a framework's
// case-insensitive comparison could take for an ASCII one (the Kelvin sign
// for k, the long s for s, the dotless i and the dotted capital I for i).
func foldPath(p string) string {
	for i := 0; i < len(p); i++ {
		if p[i] >= utf8.RuneSelf {
			return strings.Map(foldRune, p)
		}
	}
	return strings.ToLower(p)
}

func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		return unicode.ToLower(r)
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < utf8.RuneSelf {
			return unicode.ToLower(f)
		}
	}
	for _, f := range []rune{unicode.ToLower(r), unicode.ToUpper(r)} {
		if f < utf8.RuneSelf {
			return unicode.ToLower(f)
		}
	}
	return unicode.ToLower(r)
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
