// Package keyctx holds what keygate's middleware leaves in a request's
// context, so that the net/http middleware (package middleware) and the
// Echo one (middleware/echomw) share one key: middleware.FromContext and
// middleware.RequireScopes work behind either.
package keyctx

import (
	"context"
	"net/http"

	"github.com/keygate/keygate/keystore"
)

type stateKey struct{}

// State is what the middleware leaves in the request context: the verified
// key (nil for an anonymous request in Optional mode) and, behind the
// net/http middleware, the error handler that RequireScopes answers with.
type State struct {
	Key      *keystore.APIKey
	OnError  func(http.ResponseWriter, *http.Request, error)
	Verifier *keystore.Verifier // counts route-scope refusals; nil behind NewContext
}

// With returns a copy of ctx that carries st.
func With(ctx context.Context, st *State) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

// From returns the state in ctx, or nil.
func From(ctx context.Context) *State {
	st, _ := ctx.Value(stateKey{}).(*State)
	return st
}

// CheckScopes decides a route's scopes on the request's state st (which
// may be nil): nil, a [*keystore.ScopeError], or keystore.ErrMissing.
func CheckScopes(st *State, scopes []string) error {
	if st == nil || st.Key == nil {
		return keystore.ErrMissing
	}
	if st.Verifier != nil {
		return st.Verifier.Authorize(st.Key, keystore.SourceMiddleware, scopes...)
	}
	if !st.Key.HasScopes(scopes...) {
		return &keystore.ScopeError{Required: scopes}
	}
	return nil
}
