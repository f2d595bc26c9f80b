package keystore

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"
)

// listParams is the ListParams form of p.
func listParams(p GetAllParams) ListParams {
	lp := ListParams{Subject: p.Subject, Query: p.Query, IncludeInvalid: p.IncludeInvalid, Limit: p.PageSize}
	if lp.Limit == 0 {
		lp.Limit = DefaultLimit
	}
	if p.InitialPage > 1 {
		lp.Offset = min((p.InitialPage-1)*lp.Limit, MaxOffset+1) // past the cap: refused by validate
	} else if p.InitialPage < 0 {
		lp.Offset = -1 // refused by validate
	}
	return lp
}

func validateCreate(p *CreateParams) error {
	if err := checkType(p.Type); err != nil {
		return err
	}
	if err := checkText("name", p.Name, MaxNameLen, true); err != nil {
		return err
	}
	if err := checkText("subject", p.Subject, MaxSubjectLen, true); err != nil {
		return err
	}
	if p.Description != nil {
		if err := checkText("description", *p.Description, MaxDescriptionLen, false); err != nil {
			return err
		}
	}
	if p.CreatedBy != nil {
		if err := checkText("created_by", *p.CreatedBy, MaxCreatedByLen, false); err != nil {
			return err
		}
	}
	claims, err := checkClaims(p.Claims)
	if err != nil {
		return err
	}
	p.Claims = claims
	if err := checkScopes(p.Scopes); err != nil {
		return err
	}
	if err := checkRateLimits(p.RateLimits); err != nil {
		return err
	}
	if err := checkCredits(p.Credits); err != nil {
		return err
	}
	cidrs, err := checkCIDRs(p.AllowedCIDRs)
	if err != nil {
		return err
	}
	p.AllowedCIDRs = cidrs
	if p.SecondsUntilExpiration != nil {
		return checkSeconds(*p.SecondsUntilExpiration)
	}
	return nil
}

func validateUpdate(p *UpdateParams) error {
	if p.Name != nil {
		if err := checkText("name", *p.Name, MaxNameLen, true); err != nil {
			return err
		}
	}
	if p.AllowedCIDRs != nil {
		cidrs, err := checkCIDRs(*p.AllowedCIDRs)
		if err != nil {
			return err
		}
		p.AllowedCIDRs = &cidrs
	}
	if p.Subject != "" {
		if err := checkText("subject", p.Subject, MaxSubjectLen, true); err != nil {
			return err
		}
	}
	if p.Description != nil {
		if err := checkText("description", *p.Description, MaxDescriptionLen, false); err != nil {
			return err
		}
	}
	if p.Claims != nil {
		claims, err := checkClaims(p.Claims)
		if err != nil {
			return err
		}
		if claims == nil {
			claims = json.RawMessage("null")
		}
		p.Claims = claims
	}
	if p.Scopes != nil {
		if err := checkScopes(*p.Scopes); err != nil {
			return err
		}
	}
	if p.RateLimits != nil {
		if err := checkRateLimits(*p.RateLimits); err != nil {
			return err
		}
	}
	if !p.NoCredits {
		if err := checkCredits(p.Credits); err != nil {
			return err
		}
	}
	if p.SecondsUntilExpiration != nil && !p.NeverExpires {
		return checkSeconds(*p.SecondsUntilExpiration)
	}
	return nil
}

func validateList(p *ListParams) error {
	if err := checkType(p.Type); err != nil {
		return err
	}
	if p.Limit == 0 {
		p.Limit = DefaultLimit
	}
	if p.Limit < 1 || p.Limit > MaxLimit {
		return invalid("limit", "must be between 1 and %d", MaxLimit)
	}
	if p.Offset < 0 || p.Offset > MaxOffset {
		return invalid("offset", "must be between 0 and %d", MaxOffset)
	}
	if len(p.Query) > MaxNameLen || !utf8.ValidString(p.Query) {
		return invalid("query", "must be valid UTF-8 of at most %d characters", MaxNameLen)
	}
	return nil
}

func checkType(t string) error {
	if t != "" && t != KeyType {
		return invalid("type", "must be %q", KeyType)
	}
	return nil
}

func checkText(param, s string, max int, required bool) error {
	if s == "" && required {
		return missing(param)
	}
	if !utf8.ValidString(s) {
		return invalid(param, "must be valid UTF-8")
	}
	if utf8.RuneCountInString(s) > max {
		return invalid(param, "must be at most %d characters", max)
	}
	return nil
}

// checkClaims returns claims compacted, or nil for absent or null claims.
func checkClaims(claims json.RawMessage) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(claims)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil, nil
	}
	if trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, invalid("claims", "must be a JSON object or null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, trimmed); err != nil {
		return nil, invalid("claims", "must be a JSON object or null")
	}
	if buf.Len() > MaxClaimsBytes {
		return nil, invalid("claims", "must encode to at most %d bytes", MaxClaimsBytes)
	}
	return json.RawMessage(buf.Bytes()), nil
}

func checkScopes(scopes []string) error {
	if len(scopes) > MaxScopes {
		return invalid("scopes", "must hold at most %d scopes", MaxScopes)
	}
	for i, s := range scopes {
		if len(s) == 0 || len(s) > MaxScopeLen {
			return invalid("scopes", "[%d] must match [A-Za-z0-9:._/*-]{1,%d}", i, MaxScopeLen)
		}
		for j := 0; j < len(s); j++ {
			if !isScopeChar(s[j]) {
				return invalid("scopes", "[%d] must match [A-Za-z0-9:._/*-]{1,%d}", i, MaxScopeLen)
			}
		}
	}
	return nil
}

func isScopeChar(c byte) bool {
	switch c {
	case ':', '.', '_', '/', '*', '-':
		return true
	}
	return isAlnum(c)
}

// checkCIDRs returns the allowed CIDRs in their canonical form (masked;
// a single address as a /32 or /128), without repeats.
func checkCIDRs(list []string) ([]string, error) {
	if len(list) > MaxAllowedCIDRs {
		return nil, invalid("allowed_cidrs", "must hold at most %d CIDRs", MaxAllowedCIDRs)
	}
	out := make([]string, 0, len(list))
	for i, c := range list {
		p, err := parseCIDR(strings.TrimSpace(c))
		if err != nil {
			return nil, invalid("allowed_cidrs", "[%d] must be an IPv4 or IPv6 CIDR such as 203.0.113.0/24 or 2001:db8::/32", i)
		}
		if s := p.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, errBadCIDR
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() {
		// Client addresses are compared unmapped: ::ffff:10.0.0.0/104 is 10.0.0.0/8.
		if p.Bits() < 96 {
			return netip.Prefix{}, errBadCIDR
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

var errBadCIDR = invalid("allowed_cidrs", "is not a CIDR")

// parseCIDRs parses CIDRs that checkCIDRs wrote. It skips what does not
// parse, which only a hand-edited record holds: such a key then admits
// fewer addresses, never more ([admits] goes by AllowedCIDRs).
func parseCIDRs(list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	for _, c := range list {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func checkSeconds(s int64) error {
	if s < 1 || s > MaxSecondsUntilExpiration {
		return invalid("seconds_until_expiration", "must be between 1 and %d, or null for a key that never expires", MaxSecondsUntilExpiration)
	}
	return nil
}

// admits reports whether a request from addr may use the key k, whose
// state st is: the key has no allowed CIDRs, or one holds addr. The zero
// Addr (an unknown client) is admitted only by a key without allowed
// CIDRs.
func (st *keyState) admits(k *APIKey, addr netip.Addr) bool {
	if len(k.AllowedCIDRs) == 0 {
		return true
	}
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range st.allowed {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
