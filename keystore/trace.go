package keystore

import "context"

// Tracer observes verifications for a tracing system
// ([VerifierOptions.Tracer]): package keygateotel implements it with
// OpenTelemetry; keystore itself imports no tracing library.
type Tracer interface {
	// StartVerification is called as a verification through source
	// starts. The context it returns is the one the verification's Redis
	// commands run under; end is called once, when it is decided, with its
	// outcome ([Outcome]), whether the cache answered, and the ID of the
	// key the secret names ("" when there is none). Neither is ever given
	// the secret.
	StartVerification(ctx context.Context, source Source) (_ context.Context, end func(outcome string, cacheHit bool, keyID string))
}
