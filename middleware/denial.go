package middleware

import (
	"errors"
	"net/http"
	"strings"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
)

// Realm is the realm of every WWW-Authenticate challenge.
const Realm = "keygate"

// Status returns the HTTP status of a verification outcome (CONTRACT §3):
// 200 for nil, 403 for a missing scope, 401 for every other refusal, and 503
// when the store is unavailable or the error is not an outcome at all (fail
// closed, as [keystore.Outcome] counts it).
func Status(err error) int {
	switch keystore.Outcome(err) {
	case "valid":
		return http.StatusOK
	case "unavailable":
		return http.StatusServiceUnavailable
	case "insufficient_scope":
		return http.StatusForbidden
	}
	return http.StatusUnauthorized
}

// Challenge returns the WWW-Authenticate value for a refusal, or "" when the
// status carries none (200, 503).
func Challenge(err error) string {
	switch keystore.Outcome(err) {
	case "valid", "unavailable":
		return ""
	case "missing":
		return `Bearer realm="` + Realm + `"`
	case "insufficient_scope":
		var scopes []string
		var se *keystore.ScopeError
		if errors.As(err, &se) {
			scopes = se.Required
		}
		return `Bearer realm="` + Realm + `", error="insufficient_scope", scope="` + quote(strings.Join(scopes, " ")) + `"`
	}
	return `Bearer realm="` + Realm + `", error="invalid_token"`
}

// quote escapes s for the inside of an HTTP quoted-string. Keys' scopes never
// need it; a scope passed to [RequireScopes] might.
func quote(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Error returns the contract's JSON error for a refusal.
func Error(err error) *apierror.Error {
	e := &apierror.Error{Status: Status(err), Err: err}
	switch keystore.Outcome(err) {
	case "missing":
		e.Code, e.LongMessage = "authentication_invalid", "no API key in the request"
	case "malformed":
		e.Code, e.LongMessage = "api_key_invalid", "the API key is not well-formed"
	case "not_found":
		e.Code, e.LongMessage = "api_key_not_found", "the API key does not exist"
	case "revoked":
		e.Code, e.LongMessage = "api_key_revoked", "the API key has been revoked"
	case "expired":
		e.Code, e.LongMessage = "api_key_expired", "the API key has expired"
	case "insufficient_scope":
		e.Code, e.LongMessage = "insufficient_scope", "the API key lacks a required scope"
		var se *keystore.ScopeError
		if errors.As(err, &se) {
			e.LongMessage += ": " + strings.Join(se.Required, " ")
		}
	default:
		e.Code, e.LongMessage, e.RetryAfter = "store_unavailable", "the key store is unavailable; retry", 1
	}
	return e
}

// WriteError writes the response for a refusal: its status, the
// WWW-Authenticate challenge, Retry-After on 503, and the contract's JSON
// error body.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if c := Challenge(err); c != "" {
		w.Header().Set("WWW-Authenticate", c)
	}
	apierror.Write(w, apierror.RequestID(r), Error(err))
}
