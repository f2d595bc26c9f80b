package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore/apikey"
)

// APIError is an error answer of the admin API: its status and the first
// error of its body. See the package documentation for the sentinels of
// package keystore that it matches.
type APIError struct {
	Status      int    // the HTTP status
	Code        string // "api_key_revoked", "form_param_invalid", …; "" when the body was not the API's JSON
	Message     string
	LongMessage string
	Param       string // meta.param_name: the field at fault, when there is one
	TraceID     string // clerk_trace_id: the server's request ID, for its logs
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

// ErrForbidden reports a call beyond the admin token's role (403
// authorization_invalid): the token is right, but may not do this. An
// [*APIError] with status 403 matches it.
var ErrForbidden = errors.New("keygate: the admin token's role does not allow this call")

func (e *APIError) Error() string {
	msg := e.LongMessage
	if msg == "" {
		msg = e.Message
	}
	var b strings.Builder
	fmt.Fprintf(&b, "keygate: %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if msg != "" {
		b.WriteString(": " + msg)
	}
	if e.Code == "authorization_invalid" {
		b.WriteString("; use an admin token whose role allows it (admin, manage, read or verify)")
	}
	if e.TraceID != "" {
		b.WriteString(" (trace " + e.TraceID + ")")
	}
	return b.String()
}

// Is makes errors.Is match the keystore sentinel the error stands for.
func (e *APIError) Is(target error) bool {
	switch {
	case e.Status >= 500:
		return target == apikey.ErrUnavailable
	case e.Status == http.StatusForbidden && e.Code == "api_key_ip_not_allowed":
		return target == apikey.ErrIPNotAllowed
	case e.Status == http.StatusForbidden:
		return target == ErrForbidden && e.Code == "authorization_invalid"
	case e.Status != http.StatusNotFound:
		return false
	}
	switch e.Code {
	case "api_key_revoked":
		return target == apikey.ErrRevoked
	case "api_key_disabled":
		return target == apikey.ErrDisabled
	case "api_key_expired":
		return target == apikey.ErrExpired
	case "api_key_not_found", "resource_not_found":
		return target == apikey.ErrNotFound
	case "api_key_invalid":
		return target == apikey.ErrMalformed
	}
	return false
}

// newAPIError reads an error answer. A body that is not the API's JSON (a
// proxy's error page, say) leaves Code empty and Message the status text.
func newAPIError(resp *http.Response, raw []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, Message: http.StatusText(resp.StatusCode)}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	var body apierror.Body
	if json.Unmarshal(raw, &body) != nil || len(body.Errors) == 0 {
		return e
	}
	first := body.Errors[0]
	e.Code, e.Message, e.LongMessage = first.Code, first.Message, first.LongMessage
	e.Param = first.Meta["param_name"]
	e.TraceID = body.ClerkTraceID
	return e
}
