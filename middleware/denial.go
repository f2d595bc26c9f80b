package middleware

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
)

// Realm is the realm of every WWW-Authenticate challenge.
const Realm = "keygate"

// Status returns the HTTP status of a verification outcome (docs/verification.md):
// 200 for nil, 403 for a missing scope or a client address outside the
// key's allowed CIDRs, 429 for a rate limit or credits, 401 for every
// other refusal (a disabled key as a revoked one), and 503
// when the store is unavailable or the error is not an outcome at all (fail
// closed, as [keystore.Outcome] counts it).
func Status(err error) int {
	switch keystore.Outcome(err) {
	case "valid":
		return http.StatusOK
	case "unavailable":
		return http.StatusServiceUnavailable
	case "insufficient_scope", "ip_not_allowed":
		return http.StatusForbidden
	case "rate_limited", "usage_exceeded":
		return http.StatusTooManyRequests
	}
	return http.StatusUnauthorized
}

// Challenge returns the WWW-Authenticate value for a refusal, or "" when the
// status carries none (200, 503, 429, and the 403 of a client address: a
// token cannot cure it).
func Challenge(err error) string {
	switch keystore.Outcome(err) {
	case "valid", "unavailable", "rate_limited", "usage_exceeded", "ip_not_allowed":
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

// Error returns the JSON error for a refusal (docs/api.md, "Errors").
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
	case "disabled":
		e.Code, e.LongMessage = "api_key_disabled", "the API key is disabled"
	case "ip_not_allowed":
		e.Code, e.LongMessage = "api_key_ip_not_allowed", "the API key may not be used from this client address"
	case "expired":
		e.Code, e.LongMessage = "api_key_expired", "the API key has expired"
	case "insufficient_scope":
		e.Code, e.LongMessage = "insufficient_scope", "the API key lacks a required scope"
		var se *keystore.ScopeError
		if errors.As(err, &se) {
			e.LongMessage += ": " + strings.Join(se.Required, " ")
		}
	case "rate_limited":
		e.Code, e.LongMessage = "api_key_rate_limited", "the API key is over one of its rate limits"
		e.RetryAfter = retryAfter(err)
	case "usage_exceeded":
		e.Code, e.LongMessage = "api_key_usage_exceeded", "the API key has no credits left"
		e.RetryAfter = retryAfter(err)
	default:
		e.Code, e.LongMessage, e.RetryAfter = "store_unavailable", "the key store is unavailable; retry", 1
	}
	return e
}

// retryAfter is a [*keystore.LimitError]'s wait in whole seconds, at least
// 1; 0 when it has none (credits that are never refilled).
func retryAfter(err error) int {
	var le *keystore.LimitError
	if !errors.As(err, &le) || le.RetryAfter <= 0 {
		return 0
	}
	return int(max((le.RetryAfter+time.Second-1)/time.Second, 1))
}

// SetLimitHeaders sets the RateLimit-Policy and RateLimit header fields of
// the IETF httpapi draft (structured form) for a key with rate limits:
// every limit's policy, and the state of the one closest to exhaustion.
// It sets nothing when st is nil or has no rate limits.
//
//	RateLimit-Policy: "default";q=100;w=60
//	RateLimit: "default";r=42;t=18
func SetLimitHeaders(h http.Header, st *keystore.LimitState) {
	if st == nil || len(st.Limits) == 0 {
		return
	}
	policies := make([]string, len(st.Limits))
	for i, l := range st.Limits {
		policies[i] = strconv.Quote(l.Name) + ";q=" + strconv.FormatInt(l.Limit, 10) + ";w=" + strconv.FormatInt((l.DurationMs+999)/1000, 10)
	}
	h.Set("RateLimit-Policy", strings.Join(policies, ", "))
	c := st.Closest()
	h.Set("RateLimit", strconv.Quote(c.Name)+";r="+strconv.FormatInt(c.Remaining, 10)+";t="+strconv.FormatInt(int64((c.Reset+time.Second-1)/time.Second), 10))
}

// limitsOf returns the limit state a refusal carries, if any.
func limitsOf(err error) *keystore.LimitState {
	var le *keystore.LimitError
	if errors.As(err, &le) {
		return le.Limits
	}
	return nil
}

// WriteError writes the response for a refusal: its status, the
// WWW-Authenticate challenge, Retry-After on 503 and 429, the RateLimit
// header fields of a key with rate limits, and the JSON error body of
// docs/api.md.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if c := Challenge(err); c != "" {
		w.Header().Set("WWW-Authenticate", c)
	}
	SetLimitHeaders(w.Header(), limitsOf(err))
	apierror.Write(w, apierror.RequestID(r), Error(err))
}
