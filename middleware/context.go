package middleware

import (
	"context"
	"net/http"

	"github.com/keygate/keygate/keystore"
)

type stateKey struct{}

// state is what the middleware leaves in the request context: the verified
// key (nil for an anonymous request in Optional mode) and, behind [New], the
// error handler that [RequireScopes] answers with.
type state struct {
	key      *keystore.APIKey
	onError  func(http.ResponseWriter, *http.Request, error)
	verifier *keystore.Verifier // counts route-scope refusals; nil behind NewContext
}

// NewContext returns a copy of ctx that carries the verified key.
func NewContext(ctx context.Context, key *keystore.APIKey) context.Context {
	return withState(ctx, &state{key: key})
}

func withState(ctx context.Context, st *state) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

// FromContext returns the verified key that the middleware (net/http or
// Echo) put in ctx, and whether there is one.
func FromContext(ctx context.Context) (*keystore.APIKey, bool) {
	st := stateFrom(ctx)
	if st == nil || st.key == nil {
		return nil, false
	}
	return st.key, true
}

func stateFrom(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey{}).(*state)
	return st
}
