package keystore

import (
	"encoding/json"
	"net/netip"
	"time"
)

// APIKey is one key as the admin API and the verifiers see it. Its JSON form
// is the contract's wire form: snake_case names, times in Unix milliseconds.
type APIKey struct {
	Object           string          `json:"object"` // always "api_key"
	ID               string          `json:"id"`
	Type             string          `json:"type"`
	Name             string          `json:"name"`
	Subject          string          `json:"subject"`
	Description      *string         `json:"description"`
	Claims           json.RawMessage `json:"claims"` // nil encodes as null
	Scopes           []string        `json:"scopes"` // never nil on keys the store returns
	CreatedBy        *string         `json:"created_by"`
	CreatedAt        int64           `json:"created_at"`
	UpdatedAt        int64           `json:"updated_at"`
	Expiration       *int64          `json:"expiration"`
	Expired          bool            `json:"expired"`
	Revoked          bool            `json:"revoked"`
	RevocationReason *string         `json:"revocation_reason"`
	LastUsedAt       *int64          `json:"last_used_at"`
	RateLimits       []RateLimit     `json:"rate_limits"` // never nil on keys the store returns
	Credits          *Credits        `json:"credits"`     // nil: unmetered
	// Enabled is false for a disabled key, which is refused as a revoked
	// one is until it is enabled again.
	Enabled bool `json:"enabled"`
	// AllowedCIDRs are the client addresses the key is admitted from; none
	// (never nil on keys the store returns) admits any.
	AllowedCIDRs []string `json:"allowed_cidrs"`
	// RolledFrom and RolledTo link a key rolled with [Store.Roll] and the
	// key that replaced it.
	RolledFrom *string `json:"rolled_from"`
	RolledTo   *string `json:"rolled_to"`

	// Secret is set only on the key that Create and Roll return.
	Secret string `json:"secret,omitempty"`

	allowed  []netip.Prefix // AllowedCIDRs, parsed
	meterVia string         // the key whose record meters this one: a rolled key's successor
}

// UnmarshalJSON decodes the wire form. "claims": null decodes to nil
// Claims, as a key read from the store has, not to the JSON literal null.
func (k *APIKey) UnmarshalJSON(b []byte) error {
	type wire APIKey // without this method
	k.Enabled = true // a server that predates the field has no disabled keys
	if err := json.Unmarshal(b, (*wire)(k)); err != nil {
		return err
	}
	if string(k.Claims) == "null" {
		k.Claims = nil
	}
	return nil
}

// KeyType is the only key type there is for now.
const KeyType = "api_key"

// ExpiredAt reports whether the key's expiration is at or before t.
func (k *APIKey) ExpiredAt(t time.Time) bool {
	return k.Expiration != nil && *k.Expiration <= t.UnixMilli()
}

// setAllowedCIDRs sets the allowed CIDRs, which checkCIDRs has checked.
func (k *APIKey) setAllowedCIDRs(cidrs []string) {
	k.AllowedCIDRs = append([]string{}, cidrs...)
	k.allowed = parseCIDRs(k.AllowedCIDRs)
}

// admits reports whether a request from addr may use the key: the key
// has no allowed CIDRs, or one holds addr. The zero Addr (an unknown
// client) is admitted only by a key without allowed CIDRs.
func (k *APIKey) admits(addr netip.Addr) bool {
	if len(k.AllowedCIDRs) == 0 {
		return true
	}
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range k.allowed {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// HasScopes reports whether the key carries every one of the given scopes.
func (k *APIKey) HasScopes(required ...string) bool {
	for _, r := range required {
		found := false
		for _, s := range k.Scopes {
			if s == r {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// KeyList is one page of a listing.
type KeyList struct {
	Data       []*APIKey `json:"data"`
	TotalCount int       `json:"total_count"` // every match, not just this page
}
