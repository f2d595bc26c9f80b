// Package apikey holds what a user of keygate's keys handles without the
// store: the key as the admin API returns it ([APIKey]), the parameters of
// the calls that create, change and list keys, and the sentinel errors of
// a verification. Package keystore and its Go client (keystore/client) both
// use these types; keystore re-exports every name (keystore.APIKey is
// apikey.APIKey), so either import works. This package needs neither Redis
// nor Prometheus (docs/packages.md).
//
//	c, err := client.New("http://127.0.0.1:8080", token) // keystore/client
//	if err != nil { … }
//	key, err := c.Create(ctx, apikey.CreateParams{Name: "CI", Subject: "user_42", Scopes: []string{"reports:read"}})
//	switch {
//	case errors.Is(err, apikey.ErrUnavailable): // unreachable, or a 5xx
//	case err != nil: // refused: *client.APIError
//	default: // key.ID, key.Secret (shown this once)
//	}
package apikey

import (
	"encoding/json"
	"time"
)

// APIKey is one key as the admin API and the verifiers see it. Its JSON form
// is the wire form of docs/api.md, "The key": snake_case names, times in Unix milliseconds.
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
	// RolledFrom and RolledTo link a key rolled (keystore's Store.Roll)
	// and the key that replaced it.
	RolledFrom *string `json:"rolled_from"`
	RolledTo   *string `json:"rolled_to"`

	// Secret is set only on the key that Create and Roll return.
	Secret string `json:"secret,omitempty"`
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
