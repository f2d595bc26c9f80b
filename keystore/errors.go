package keystore

import (
	"fmt"
	"strings"

	"github.com/keygate/keygate/keystore/apikey"
)

// The sentinel errors of a verification are package apikey's (the same
// values, so errors.Is matches either name); see there for what each means.
var (
	ErrMalformed    = apikey.ErrMalformed
	ErrNotFound     = apikey.ErrNotFound
	ErrRevoked      = apikey.ErrRevoked
	ErrDisabled     = apikey.ErrDisabled
	ErrIPNotAllowed = apikey.ErrIPNotAllowed
	ErrExpired      = apikey.ErrExpired
	ErrUnavailable  = apikey.ErrUnavailable
)

// ValidationError reports an input that breaks one of the documented limits (docs/api.md).
// Param is the wire name of the offending field ("scopes", "limit", …).
type ValidationError struct {
	Param   string
	Missing bool   // the field is required and absent
	Reason  string // human-readable, never contains a secret
}

func (e *ValidationError) Error() string {
	if e.Missing {
		return fmt.Sprintf("%s is missing", e.Param)
	}
	if strings.HasPrefix(e.Reason, "[") { // scopes[2] must …
		return e.Param + e.Reason
	}
	return e.Param + " " + e.Reason
}

func invalid(param, format string, args ...any) error {
	return &ValidationError{Param: param, Reason: fmt.Sprintf(format, args...)}
}

func missing(param string) error {
	return &ValidationError{Param: param, Missing: true}
}

// unavailable wraps a Redis failure so that errors.Is(err, ErrUnavailable)
// holds and the cause stays visible to logs.
func unavailable(op string, err error) error {
	return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
}
