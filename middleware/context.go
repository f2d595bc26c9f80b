package middleware

import (
	"context"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware/internal/keyctx"
)

// NewContext returns a copy of ctx that carries the verified key.
func NewContext(ctx context.Context, key *keystore.APIKey) context.Context {
	return keyctx.With(ctx, &keyctx.State{Key: key})
}

// FromContext returns the verified key that the middleware (net/http or
// Echo) put in ctx, and whether there is one.
func FromContext(ctx context.Context) (*keystore.APIKey, bool) {
	st := keyctx.From(ctx)
	if st == nil || st.Key == nil {
		return nil, false
	}
	return st.Key, true
}
