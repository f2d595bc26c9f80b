package keystore

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits from the contract.
const (
	MaxNameLen        = 256
	MaxSubjectLen     = 256
	MaxDescriptionLen = 1024
	MaxCreatedByLen   = 256
	MaxClaimsBytes    = 8 << 10
	MaxScopes         = 100
	MaxScopeLen       = 128
	DefaultLimit      = 10
	MaxLimit          = 100
	MaxOffset         = 1<<31 - 1
	MaxAllowedCIDRs   = 32

	// MaxSecondsUntilExpiration is 100 years; a longer expiry is a typo.
	MaxSecondsUntilExpiration = 100 * 365 * 24 * 3600
)

// CreateParams are the inputs of [Store.Create]. Their JSON names are the
// admin API's.
type CreateParams struct {
	Type        string          `json:"type"` // "" or "api_key"
	Name        string          `json:"name"`
	Subject     string          `json:"subject"`
	Description *string         `json:"description"`
	Claims      json.RawMessage `json:"claims"` // a JSON object, or null
	Scopes      []string        `json:"scopes"`
	CreatedBy   *string         `json:"created_by"`
	// SecondsUntilExpiration is nil for a key that never expires.
	SecondsUntilExpiration *int64 `json:"seconds_until_expiration"`
	// RateLimits and Credits meter the key (docs/usage.md); none by default.
	RateLimits []RateLimit `json:"rate_limits"`
	Credits    *Credits    `json:"credits"`
	// AllowedCIDRs restrict the client addresses the key is admitted from
	// (IPv4 or IPv6 CIDRs, or single addresses); none admits any.
	AllowedCIDRs []string `json:"allowed_cidrs"`
	// Enabled false creates the key disabled. nil means true.
	Enabled *bool `json:"enabled"`
}

// UpdateParams are the inputs of [Store.Update]. A nil field is left as it is.
type UpdateParams struct {
	// Subject, when not empty, must equal the key's subject.
	Subject string
	// Description replaces the description; a pointer to "" clears it.
	Description *string
	// Claims replaces the claims; the JSON literal null clears them.
	Claims json.RawMessage
	// Scopes replaces the scopes; a pointer to an empty slice clears them.
	Scopes *[]string
	// SecondsUntilExpiration sets a new expiration, counted from now.
	SecondsUntilExpiration *int64
	// NeverExpires removes the expiration. It wins over SecondsUntilExpiration.
	NeverExpires bool
	// RateLimits replaces the rate limits (and restarts them); a pointer to
	// an empty slice removes them.
	RateLimits *[]RateLimit
	// Credits replaces the credits (remaining and refill); NoCredits
	// removes them and wins over Credits.
	Credits   *Credits
	NoCredits bool
	// Name renames the key.
	Name *string
	// Enabled disables (false) or enables (true) the key.
	Enabled *bool
	// AllowedCIDRs replaces the allowed client addresses; a pointer to an
	// empty slice admits any address again.
	AllowedCIDRs *[]string
}

// ListParams select and page the keys [Store.List] returns, newest first.
type ListParams struct {
	Subject        string // "" lists every subject
	Query          string // case-insensitive substring of the name
	IncludeInvalid bool   // include revoked, disabled and expired keys
	Type           string // "" or "api_key"
	Limit          int    // 1–100; 0 means 10
	Offset         int    // ≥ 0
}

// GetAllParams is the page-numbered form of [ListParams] that Clerk's SDKs
// use: page InitialPage (from 1) of PageSize keys.
type GetAllParams struct {
	Subject        string
	Query          string
	IncludeInvalid bool
	InitialPage    int // 0 means 1
	PageSize       int // 0 means 10
}

func (p GetAllParams) listParams() ListParams {
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

func (p *CreateParams) validate() error {
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

func (p *UpdateParams) validate() error {
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

func (p *ListParams) validate() error {
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
// fewer addresses, never more ([APIKey.admits] goes by AllowedCIDRs).
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
