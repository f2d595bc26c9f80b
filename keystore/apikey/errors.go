package apikey

import "errors"

// ErrMalformed reports a secret that cannot be a key of this store: wrong
// prefix, length or alphabet, or a checksum that does not match. It is
// decided without any I/O.
var ErrMalformed = errors.New("keystore: malformed api key")

// ErrNotFound reports a key ID that the store does not hold, or a secret
// whose digest does not match the stored one.
var ErrNotFound = errors.New("keystore: api key not found")

// ErrRevoked reports a key that has been revoked.
var ErrRevoked = errors.New("keystore: api key revoked")

// ErrDisabled reports a key that is disabled (enabled: false). It is
// refused as a revoked key is, until it is enabled again.
var ErrDisabled = errors.New("keystore: api key disabled")

// ErrIPNotAllowed reports a valid key used from a client address outside
// its allowed CIDRs, or from an unknown one by a key that has allowed
// CIDRs.
var ErrIPNotAllowed = errors.New("keystore: client address not allowed for this api key")

// ErrExpired reports a key whose expiration is at or before now.
var ErrExpired = errors.New("keystore: api key expired")

// ErrUnavailable reports a technical failure to reach the store. Unlike the
// other sentinels it says nothing about the key; callers must fail closed
// (HTTP 503), never treat it as a refusal or an acceptance.
var ErrUnavailable = errors.New("keystore: store unavailable")
