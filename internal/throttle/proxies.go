package throttle

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the peers trusted to report a client's address in
// X-Forwarded-For. The zero value trusts nobody: every client is the
// direct peer.
type Proxies []netip.Prefix

// ParseProxies parses a comma-separated list of CIDR prefixes and single
// addresses ("10.0.0.0/8, 192.168.1.7, fd00::/8"). An empty list trusts
// nobody.
func ParseProxies(list string) (Proxies, error) {
	var out Proxies
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR prefix or an IP address", s)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix or an IP address", s)
		}
		a = a.Unmap().WithZone("")
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Contains reports whether a is one of the trusted proxies.
func (p Proxies) Contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap().WithZone("")
	for _, pfx := range p {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the address of the client that sent r. It is the direct
// peer (r.RemoteAddr), unless the peer is a trusted proxy: then
// X-Forwarded-For is read from right to left, each trusted hop skipped,
// and the first address that is not a trusted proxy is the client. What a
// client writes into X-Forwarded-For itself sits left of what the trusted
// proxies appended, so it is never reached. An entry that is not an
// address stops the walk at the last hop read; when every hop is trusted,
// the leftmost one is the client. The zero Addr is returned when
// r.RemoteAddr is no IP address (a Unix socket): such clients share one
// budget.
func (p Proxies) ClientIP(r *http.Request) netip.Addr {
	var client netip.Addr
	p.walk(r, func(a netip.Addr) { client = a })
	return client
}

// Chain returns the addresses r came through as far as the trusted
// proxies vouch for them: the direct peer first, then the hops of
// X-Forwarded-For that [Proxies.ClientIP] reads, the client last. The
// direct peer is the zero Addr when r.RemoteAddr is no IP address.
func (p Proxies) Chain(r *http.Request) []netip.Addr {
	var chain []netip.Addr
	p.walk(r, func(a netip.Addr) { chain = append(chain, a) })
	return chain
}

// walk calls hop with the direct peer and then, while the address just
// given is a trusted proxy, with each address of X-Forwarded-For from the
// right, until one is not an address.
func (p Proxies) walk(r *http.Request, hop func(netip.Addr)) {
	client := parseHop(r.RemoteAddr)
	hop(client)
	if len(p) == 0 || !p.Contains(client) {
		return
	}
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			var h string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				v, h = v[:j], v[j+1:]
			} else {
				v, h = "", v
			}
			if strings.TrimSpace(h) == "" {
				continue
			}
			a := parseHop(h)
			if !a.IsValid() {
				return
			}
			hop(a)
			if !p.Contains(a) {
				return
			}
		}
	}
}

// parseHop parses "192.0.2.1", "192.0.2.1:443", "2001:db8::1" or
// "[2001:db8::1]:443"; it returns the zero Addr for anything else.
func parseHop(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if t, ok := strings.CutPrefix(s, "["); ok {
		if t, ok = strings.CutSuffix(t, "]"); ok {
			if a, err := netip.ParseAddr(t); err == nil {
				return a.Unmap()
			}
		}
	}
	return netip.Addr{}
}
