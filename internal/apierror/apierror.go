// Package apierror writes keygate's JSON error body (docs/api.md, "Errors"),
// the one Clerk's Backend API uses, for every HTTP surface of keygate:
//
//	{"errors":[{"code":"form_param_invalid","message":"is invalid",
//	  "long_message":"…","meta":{"param_name":"scopes"}}],"clerk_trace_id":"…"}
//
// Handlers return or build an [*Error]; [Write] is the one place that turns
// it into a response.
package apierror

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
)

// Error is what a client is told: Status and the body's fields. Err is the
// cause, for logs only; it is never written to the client.
type Error struct {
	Status      int
	Code        string
	Message     string
	LongMessage string
	Param       string // meta.param_name, when the error is about one field
	RetryAfter  int    // seconds; sets Retry-After when positive
	Err         error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.LongMessage
}

func (e *Error) Unwrap() error { return e.Err }

// Body is the JSON of every error answer: [Write] writes it, and the Go
// client and the tests read it.
type Body struct {
	Errors       []Item `json:"errors"`
	ClerkTraceID string `json:"clerk_trace_id"`
}

// Item is one error of a [Body]; keygate writes exactly one.
type Item struct {
	Code        string            `json:"code"`
	Message     string            `json:"message"`
	LongMessage string            `json:"long_message"`
	Meta        map[string]string `json:"meta"`
}

// ContentType is the exact Content-Type of every JSON response: Clerk's SDK
// compares the header as a string, so no charset parameter.
const ContentType = "application/json"

// Write writes e as the response, with traceID as clerk_trace_id.
func Write(w http.ResponseWriter, traceID string, e *Error) {
	meta := map[string]string{}
	if e.Param != "" {
		meta["param_name"] = e.Param
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	long := e.LongMessage
	if long == "" {
		long = msg
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(Body{
		Errors:       []Item{{Code: e.Code, Message: msg, LongMessage: long, Meta: meta}},
		ClerkTraceID: traceID,
	})
}

// HeaderRequestID carries a request's ID, in the request (from a client or
// a proxy, when it is a sane token) and in every response.
const HeaderRequestID = "X-Request-Id"

type requestIDKey struct{}

// WithRequestID gives r its one request ID, unless it has one already:
// the X-Request-Id it came with when that is a sane token, else a fresh
// random one. The ID is set as the response's X-Request-Id and kept in the
// returned request's context, where [RequestID] finds it, so that the
// access log, the error body's clerk_trace_id and the header agree.
func WithRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	if _, ok := r.Context().Value(requestIDKey{}).(string); ok {
		return r
	}
	id := RequestID(r)
	w.Header().Set(HeaderRequestID, id)
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}

// RequestID returns the ID that [WithRequestID] gave r; for a request that
// went through no WithRequestID, its X-Request-Id when that is a sane
// token, else a fresh random one.
func RequestID(r *http.Request) string {
	if id, ok := r.Context().Value(requestIDKey{}).(string); ok {
		return id
	}
	if id := r.Header.Get(HeaderRequestID); id != "" && len(id) <= 128 && printable(id) {
		return id
	}
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
