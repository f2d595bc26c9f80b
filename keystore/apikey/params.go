package apikey

import "encoding/json"

// The limits of docs/api.md, "The key".
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

// CreateParams are the inputs of keystore's Store.Create. Their JSON names are the
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

// UpdateParams are the inputs of keystore's Store.Update. A nil field is left as it is.
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

// ListParams select and page the keys keystore's Store.List returns, newest first.
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

// ImportParams are the inputs of keystore's Store.Import: a key as [CreateParams]
// describe it, and the digest of its existing secret.
type ImportParams struct {
	CreateParams
	Hash ImportHash `json:"hash"`
}

// ImportHash is the digest of an imported key's secret, as the other
// system stored it.
type ImportHash struct {
	Algorithm string `json:"algorithm"` // "sha256", the only one for now
	Value     string `json:"value"`     // 64 hex characters
}
