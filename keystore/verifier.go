package keystore

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source names the entry point a verification came through, as the
// keygate_verifications_total metric labels it.
type Source string

// The entry points of the contract.
const (
	SourceMiddleware  Source = "middleware"
	SourceSidecar     Source = "sidecar"
	SourceForwardAuth Source = "forward_auth"
	SourceAPI         Source = "api"
)

// ErrMissing reports a request that carried no key at all.
var ErrMissing = errors.New("keystore: no api key")

// ErrInsufficientScope reports a valid key that lacks a required scope. The
// error [Verifier.Verify] returns is a [*ScopeError] that matches it.
var ErrInsufficientScope = errors.New("keystore: api key lacks a required scope")

// ScopeError reports the scopes a valid key lacks.
type ScopeError struct {
	Required []string // every scope the call required
}

func (e *ScopeError) Error() string { return ErrInsufficientScope.Error() }

// Is makes errors.Is(err, ErrInsufficientScope) hold.
func (e *ScopeError) Is(target error) bool { return target == ErrInsufficientScope }

// VerifierOptions configure a [Verifier]. The zero value works.
type VerifierOptions struct {
	// CacheTTL is the longest a verified key is served from memory.
	// Default 30s; negative disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached keys. Default 100,000.
	CacheSize int
	// InvalidationWait bounds how long revoke, update and delete wait for
	// every verifier to acknowledge an invalidation. Default 250ms.
	InvalidationWait time.Duration
	// SubscriptionStale is how old the last proof of a live invalidation
	// subscription may be before the cache is bypassed. Default 2s.
	SubscriptionStale time.Duration
	// Registerer receives the verifier's metrics. Default: none.
	Registerer prometheus.Registerer
	// Logger receives failures of background work. Default slog.Default().
	Logger *slog.Logger
}

func (o VerifierOptions) withDefaults() VerifierOptions {
	if o.CacheTTL == 0 {
		o.CacheTTL = 30 * time.Second
	}
	if o.CacheSize == 0 {
		o.CacheSize = 100_000
	}
	if o.InvalidationWait == 0 {
		o.InvalidationWait = 250 * time.Millisecond
	}
	if o.SubscriptionStale == 0 {
		o.SubscriptionStale = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Verifier is the one verification engine behind every entry point: the
// middleware, the sidecar, forward-auth and POST /api_keys/verify. Its
// methods are safe for concurrent use.
type Verifier struct {
	store   *Store
	opts    VerifierOptions
	metrics *verifierMetrics
}

// NewVerifier returns a verifier over store.
func NewVerifier(store *Store, opts VerifierOptions) (*Verifier, error) {
	opts = opts.withDefaults()
	m, err := newVerifierMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Verifier{store: store, opts: opts, metrics: m}, nil
}

// Verify checks secret and that its key holds every one of scopes.
//
// A refused key is an outcome, not a failure: [ErrMissing] for an empty
// secret, [ErrMalformed], [ErrNotFound], [ErrRevoked], [ErrExpired], or a
// [*ScopeError] (matching [ErrInsufficientScope]) with the key returned too.
// Only an error wrapping [ErrUnavailable] means the answer is unknown, and
// callers must then fail closed. Every call counts in
// keygate_verifications_total under source.
func (v *Verifier) Verify(ctx context.Context, secret string, source Source, scopes ...string) (*APIKey, error) {
	start := time.Now()
	key, err := v.verify(ctx, secret, scopes)
	v.metrics.observe(source, Outcome(err), "miss", time.Since(start))
	return key, err
}

func (v *Verifier) verify(ctx context.Context, secret string, scopes []string) (*APIKey, error) {
	if secret == "" {
		return nil, ErrMissing
	}
	key, err := v.store.Verify(ctx, secret)
	if err != nil {
		return key, err
	}
	if !key.HasScopes(scopes...) {
		return key, &ScopeError{Required: scopes}
	}
	return key, nil
}

// Ready reports whether the verifier can answer: Redis answers a PING.
func (v *Verifier) Ready(ctx context.Context) error {
	if err := v.store.rdb.Ping(ctx).Err(); err != nil {
		return unavailable("pinging redis", err)
	}
	return nil
}

// Close stops the verifier's background work.
func (v *Verifier) Close() error { return nil }

// Outcome names the result of a verification as the metrics label it:
// valid, missing, malformed, not_found, revoked, expired,
// insufficient_scope or unavailable.
func Outcome(err error) string {
	switch {
	case err == nil:
		return "valid"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrMissing):
		return "missing"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrInsufficientScope):
		return "insufficient_scope"
	}
	return "unavailable"
}
