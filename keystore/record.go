package keystore

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Field names of a key's record, a Redis hash. They are short because a
// record is stored once per key and read on every uncached verification:
// Redis keeps every field's name in every record, so the names count
// against the memory budget per key (BENCHMARKS.md, "memory per stored
// key") as much as the values do. A nullable field that is null is absent
// from the hash; so is the type when it is the default "api_key".
const (
	fName        = "n"
	fSubject     = "s"
	fType        = "t"
	fDescription = "d"
	fClaims      = "c"  // compact JSON object
	fScopes      = "sc" // joined by one space; scopes hold no spaces
	fCreatedBy   = "cb"
	fCreatedAt   = "ca" // Unix ms, decimal
	fUpdatedAt   = "ua"
	fExpiration  = "e"
	fRevoked     = "r"  // "1" once revoked
	fReason      = "rr" // revocation reason
	fLastUsedAt  = "lu"
	fDigest      = "h"  // 32 raw bytes of SHA-256 or HMAC-SHA-256
	fDeleted     = "x"  // "1" in the tombstone a delete leaves, with fSubject only
	fHashKey     = "hk" // the hash key that made fDigest: absent for the legacy one
	fDisabled    = "di" // "1" while disabled
	fCIDRs       = "ac" // allowed CIDRs, comma-separated
	fRolledFrom  = "rf"
	fRolledTo    = "rt"
	fMeterVia    = "mv" // a rolled key's successor, whose record meters it
)

// record is a key as stored: the key, the digest of its secret, the hash
// key that made it, and the store's own state of the key.
type record struct {
	key     *APIKey
	digest  string
	hashKey string // "" for the legacy key
	keyState
}

// keyState is what the store keeps beside a key's wire form, in its
// record and in a [Verifier]'s cache entry; an [APIKey] never holds it.
type keyState struct {
	// allowed is the key's AllowedCIDRs, parsed.
	allowed []netip.Prefix
	// meterVia is the key whose record meters this one: a rolled key's
	// successor, during its grace; "" for the key itself.
	meterVia string
}

// fields returns the hash fields of a new record, as HSET arguments.
func (r *record) fields() []any {
	k := r.key
	f := []any{
		fName, k.Name,
		fSubject, k.Subject,
		fCreatedAt, k.CreatedAt,
		fUpdatedAt, k.UpdatedAt,
		fDigest, r.digest,
	}
	if r.hashKey != "" {
		f = append(f, fHashKey, r.hashKey)
	}
	if !k.Enabled {
		f = append(f, fDisabled, "1")
	}
	if len(k.AllowedCIDRs) > 0 {
		f = append(f, fCIDRs, strings.Join(k.AllowedCIDRs, ","))
	}
	if k.RolledFrom != nil {
		f = append(f, fRolledFrom, *k.RolledFrom)
	}
	if k.Type != KeyType {
		f = append(f, fType, k.Type)
	}
	if len(k.Scopes) > 0 {
		f = append(f, fScopes, strings.Join(k.Scopes, " "))
	}
	if k.Description != nil {
		f = append(f, fDescription, *k.Description)
	}
	if k.Claims != nil {
		f = append(f, fClaims, string(k.Claims))
	}
	if k.CreatedBy != nil {
		f = append(f, fCreatedBy, *k.CreatedBy)
	}
	if k.Expiration != nil {
		f = append(f, fExpiration, *k.Expiration)
	}
	if len(k.RateLimits) > 0 {
		f = append(f, fRateLimits, encodeRateLimits(k.RateLimits))
	}
	if c := k.Credits; c != nil {
		f = append(f, fCredits, c.Remaining)
		if c.Refill != nil {
			f = append(f, fRefill, encodeRefill(c.Refill))
		}
		if c.LastRefillAt != nil {
			f = append(f, fLastRefill, *c.LastRefillAt)
		}
	}
	return f
}

// decodeRecord builds the record with the given ID from its hash fields, with
// Expired computed against now. It reports false for an empty hash (no key).
func decodeRecord(id string, h map[string]string, now time.Time) (*record, bool) {
	if _, deleted := h[fDeleted]; len(h) == 0 || deleted {
		return nil, false
	}
	k := &APIKey{
		Object:    KeyType,
		ID:        id,
		Type:      h[fType],
		Name:      h[fName],
		Subject:   h[fSubject],
		Scopes:    []string{},
		CreatedAt: parseMillis(h[fCreatedAt]),
		UpdatedAt: parseMillis(h[fUpdatedAt]),
		Revoked:   h[fRevoked] == "1",
		Enabled:   h[fDisabled] != "1",
	}
	if k.Type == "" {
		k.Type = KeyType
	}
	if s := h[fScopes]; s != "" {
		k.Scopes = strings.Split(s, " ")
	}
	if v, ok := h[fDescription]; ok {
		k.Description = &v
	}
	if v, ok := h[fClaims]; ok {
		k.Claims = json.RawMessage(v)
	}
	if v, ok := h[fCreatedBy]; ok {
		k.CreatedBy = &v
	}
	if v, ok := h[fReason]; ok {
		k.RevocationReason = &v
	}
	if v, ok := h[fExpiration]; ok {
		ms := parseMillis(v)
		k.Expiration = &ms
	}
	if v, ok := h[fLastUsedAt]; ok {
		ms := parseMillis(v)
		k.LastUsedAt = &ms
	}
	k.RateLimits = []RateLimit{}
	if v, ok := h[fRateLimits]; ok {
		k.RateLimits = decodeRateLimits(v)
	}
	if v, ok := h[fCredits]; ok {
		k.Credits = &Credits{Remaining: parseMillis(v)}
		if r, ok := h[fRefill]; ok {
			k.Credits.Refill = decodeRefill(r)
		}
		if v, ok := h[fLastRefill]; ok {
			ms := parseMillis(v)
			k.Credits.LastRefillAt = &ms
		}
	}
	st := keyState{meterVia: h[fMeterVia]}
	k.AllowedCIDRs = []string{}
	if v := h[fCIDRs]; v != "" {
		k.AllowedCIDRs = strings.Split(v, ",")
		st.allowed = parseCIDRs(k.AllowedCIDRs)
	}
	if v, ok := h[fRolledFrom]; ok {
		k.RolledFrom = &v
	}
	if v, ok := h[fRolledTo]; ok {
		k.RolledTo = &v
	}
	k.Expired = k.ExpiredAt(now)
	return &record{key: k, digest: h[fDigest], hashKey: h[fHashKey], keyState: st}, true
}

// hashFromReply turns a script's HGETALL reply into a map.
func hashFromReply(reply []any) map[string]string {
	h := make(map[string]string, len(reply)/2)
	for i := 0; i+1 < len(reply); i += 2 {
		k, _ := reply[i].(string)
		v, _ := reply[i+1].(string)
		h[k] = v
	}
	return h
}

func parseMillis(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
