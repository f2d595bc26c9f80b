// Package keystate holds what package keystore keeps on an apikey.APIKey
// beyond its wire form. apikey.APIKey embeds [Key] as an unexported field,
// so that keystore reaches these fields while the key's type lives in
// package apikey, and no user of apikey sees them in its documentation.
package keystate

import "net/netip"

// Key is the store's own state of one key. Its fields never encode to JSON.
type Key struct {
	// Allowed is the key's AllowedCIDRs, parsed.
	Allowed []netip.Prefix `json:"-"`
	// MeterVia is the key whose record meters this one: a rolled key's
	// successor, during its grace; "" for the key itself.
	MeterVia string `json:"-"`
}
