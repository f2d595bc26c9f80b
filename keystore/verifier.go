package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source names the entry point a verification came through, as the
// keygate_verifications_total metric labels it. It is a free label chosen
// by the caller: keystore decides nothing by it. A program with an entry
// point of its own passes its own value (Source("console")); keep to a
// fixed, small set, since each value is a metric series. The constants are
// the labels of keygate's own entry points, which are counted without a
// lock; any other value is counted too, under one.
type Source string

// The labels of keygate's own entry points.
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
	// CacheTTL is the longest a verified key is served from memory
	// (KEYGATE_CACHE_TTL). Default 30s; negative disables the cache, and
	// with it the subscription to invalidations: every verification then
	// reads Redis.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached keys. Default 100,000.
	CacheSize int
	// CacheMaxBytes bounds the memory the cache keeps alive, estimated from
	// each record's strings, claims and scopes plus a fixed overhead per
	// entry (KEYGATE_CACHE_MAX_BYTES). Default 64 MiB.
	CacheMaxBytes int64
	// InvalidationWait, when not zero, replaces the store's
	// [Options.InvalidationWait]: how long revoke, update and delete wait
	// for every verifier to acknowledge an invalidation (default 250ms).
	InvalidationWait time.Duration
	// SubscriptionStale (KEYGATE_SUBSCRIPTION_STALE) bounds how long the
	// cache answers without a fresh proof that the verifier is registered
	// and has received every invalidation: the verifier heartbeats every
	// quarter of it (at most every second), each heartbeat registering it
	// for SubscriptionStale by the Redis server's clock and letting the
	// cache answer for three quarters of that. It is also the longest a
	// revoke, update or delete waits for a verifier that does not answer.
	// Default 2s.
	SubscriptionStale time.Duration
	// Registerer receives the verifier's metrics: keygate_verifications_total,
	// keygate_verification_duration_seconds, keygate_cache_invalidations_total
	// and keygate_cache_entries. Default: none.
	Registerer prometheus.Registerer
	// Logger receives failures of background work. Default slog.Default().
	Logger *slog.Logger
	// CreditsExhausted, when set, is called with the key when a
	// verification spends its last credit (leaves 0): once per exhaustion,
	// however many instances verify the key. It runs on the verification's
	// goroutine, so it must not block. Default: none.
	CreditsExhausted func(key *APIKey)
	// Tracer, when set, is told of every verification (a span, with
	// whether the cache answered). Default none: then tracing costs a nil
	// check.
	Tracer Tracer
}

func (o VerifierOptions) withDefaults() VerifierOptions {
	if o.CacheTTL == 0 {
		o.CacheTTL = 30 * time.Second
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 100_000
	}
	if o.CacheMaxBytes <= 0 {
		o.CacheMaxBytes = 64 << 20
	}
	if o.SubscriptionStale <= 0 {
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
//
// It caches the records of the keys it verified, by key ID, for at most
// [VerifierOptions.CacheTTL], and still decides every call afresh: the
// secret's digest is compared in constant time, and revocation and expiry
// are checked against the store's clock. Once Revoke, Update, Delete, Roll
// or RevokeAll on any [Store] sharing the Redis has returned, no verifier
// answers from an older copy of the key: the cache answers only while a
// heartbeat proves, within [VerifierOptions.SubscriptionStale], that the
// verifier is registered and missed no invalidation (docs/revocation.md);
// otherwise every call reads Redis. Unknown key IDs are not cached.
// Malformed secrets never reach Redis, nor do secrets in no keygate form
// where no key was imported ([Store.Import]).
type Verifier struct {
	store   *Store
	opts    VerifierOptions
	metrics *verifierMetrics
	log     *slog.Logger
	cache   *cache // nil when disabled
	loads   *loader
	// wallClock is set when the store's clock is [time.Now], the default:
	// then the time Verify starts at is also the time it decides at, and
	// reading the clock once less is a tenth of a cached verification.
	wallClock bool

	// The subscription to invalidations; unused without a cache.
	id       string // instance ID
	channel  string
	interval time.Duration // of heartbeats and PINGs
	live     liveness
	sessions atomic.Uint64 // subscriptions confirmed
	acks     chan string   // nonces of invalidations handled
	bg       context.Context
	stop     chan struct{}
	wg       sync.WaitGroup
	closing  sync.Once

	// afterLoad, when set (by tests), runs between loading a record and
	// caching it.
	afterLoad func()
	// beforeReceive, when set (by tests), sees each message of the
	// subscription first; false drops it, as a lossy network would.
	beforeReceive func(msg any) bool
}

// maxLoadsOnWire is how many cache-miss loads (single, or pipelines of
// those that queued) a verifier has on the wire at once: one per core, at
// least two. A round trip's cost is mostly the client's system calls, so
// more in flight than cores only adds calls; a queue that waits instead
// goes as one pipeline. See [loader].
func maxLoadsOnWire() int { return max(2, runtime.GOMAXPROCS(0)) }

// backgroundKey marks the context of the verifier's own Redis commands
// (heartbeats, acknowledgements), as opposed to verifications.
type backgroundKey struct{}

// NewVerifier returns a verifier over store, and with a cache, subscribes
// it to invalidations. Call [Verifier.Close] to unsubscribe.
func NewVerifier(store *Store, opts VerifierOptions) (*Verifier, error) {
	if opts.InvalidationWait != 0 {
		store.invalidationWait.Store(int64(opts.InvalidationWait))
	}
	opts = opts.withDefaults()
	m, err := newVerifierMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("keystore: registering metrics: %w", err)
	}
	id, err := newInstanceID()
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		store:     store,
		wallClock: reflect.ValueOf(store.opts.Now).Pointer() == reflect.ValueOf(time.Now).Pointer(),
		opts:      opts,
		loads:     newLoader(store, maxLoadsOnWire()),
		metrics:   m,
		log:       opts.Logger,
		id:        id,
		channel:   store.names.invalidate(),
		interval:  min(max(opts.SubscriptionStale/4, time.Millisecond), time.Second),
		acks:      make(chan string, 1024),
		bg:        context.WithValue(context.Background(), backgroundKey{}, true),
		stop:      make(chan struct{}),
	}
	v.live.hold = opts.SubscriptionStale * 3 / 4
	v.live.flush = v.empty
	v.live.reset(store.now())
	if opts.CacheTTL > 0 {
		v.cache = newCache(opts.CacheSize, opts.CacheMaxBytes, opts.CacheTTL, m.entries)
		v.wg.Add(3)
		go v.subscribe()
		go v.acknowledge()
		go v.sweep()
	} else {
		v.wg.Add(1)
		go v.watchImports()
	}
	return v, nil
}

// InstanceID names the verifier in the Redis registry of live verifiers and
// in the warnings of revokers it did not answer.
func (v *Verifier) InstanceID() string { return v.id }

// Request is one verification: the secret, the entry point it came
// through, and what the route requires.
type Request struct {
	Secret string
	Source Source
	Scopes []string // every one required
	// Cost is what the request spends of a metered key's rate limits and
	// credits (docs/usage.md). 0 means 1.
	Cost int64
	// ClientIP is the address of the client, for keys with allowed CIDRs:
	// the zero Addr (unknown) is refused by every such key.
	ClientIP netip.Addr
}

// Result is what a verification learned: the key (also when refused, but
// for missing, malformed and unknown secrets) and, for a key with rate
// limits or credits, their state after this request.
type Result struct {
	Key    *APIKey
	Limits *LimitState // nil for a key without limits or credits

	id string // of the key the secret names, when it exists
}

// Verify is [Verifier.Check] of a request of cost 1, returning the key.
//
// It knows no client address: a key with allowed CIDRs is refused with
// [ErrIPNotAllowed]. Use Check with [Request.ClientIP] for those.
func (v *Verifier) Verify(ctx context.Context, secret string, source Source, scopes ...string) (*APIKey, error) {
	res, err := v.check(ctx, secret, source, scopes, 1, netip.Addr{})
	return res.Key, err
}

// Check verifies a request, in the order docs/verification.md gives: the
// secret's form and checksum, the record, revoked, disabled and expired,
// the client address, the scopes, the rate limits, the credits. A request
// refused by one step is not charged by a later one.
//
// A refused key is an outcome, not a failure: [ErrMissing] for an empty
// secret, [ErrMalformed], [ErrNotFound], [ErrRevoked], [ErrDisabled],
// [ErrExpired], [ErrIPNotAllowed], a [*ScopeError] (matching
// [ErrInsufficientScope]), or a [*LimitError]
// (matching [ErrRateLimited] or [ErrUsageExceeded]). Only an error
// wrapping [ErrUnavailable] means the answer is unknown, and callers must
// then fail closed. Every call counts in keygate_verifications_total under
// req.Source.
//
// An admitted request records the use for last_used_at. The returned key
// shares its slices and pointers (Scopes, Claims, …) with the cache: treat
// it as read-only.
func (v *Verifier) Check(ctx context.Context, req Request) (Result, error) {
	return v.check(ctx, req.Secret, req.Source, req.Scopes, req.Cost, req.ClientIP)
}

// check is Check with the request's fields apart: escape analysis follows
// parameters, not fields, and scopes must not escape with the secret, so
// that Verify's variadic scopes stay on the caller's stack.
func (v *Verifier) check(ctx context.Context, secret string, source Source, scopes []string, cost int64, client netip.Addr) (Result, error) {
	var end func(string, bool, string)
	if v.opts.Tracer != nil {
		ctx, end = v.opts.Tracer.StartVerification(ctx, source)
	}
	// One stripe for the counts this verification writes: the last use,
	// the metrics, the usage history. A load from Redis holds it across
	// the round trip, which costs nothing but that other verifications on
	// the processor meanwhile take another.
	sn := takeStripe()
	start := time.Now()
	res, hit, err := v.verify(ctx, sn, secret, scopes, cost, client, start)
	v.metrics.observe(sn, source, outcomeIndex(err), hit, time.Since(start))
	if res.id != "" {
		if o := historyOutcome(err); o != histNone {
			at := start
			if !v.wallClock {
				at = v.store.now()
			}
			v.store.history.record(sn, res.id, at, o)
		}
	}
	sn.release()
	if end != nil {
		end(Outcome(err), hit, res.id)
	}
	return res, err
}

// Authorize checks, without I/O, that key (as [Verifier.Verify] returned
// it) holds every one of scopes: for scopes that a route adds after the key
// was verified. It returns nil, or a [*ScopeError] that it also counts in
// keygate_verifications_total{result="insufficient_scope"} under source.
// A success counts nothing: the Verify before it did.
func (v *Verifier) Authorize(key *APIKey, source Source, scopes ...string) error {
	if key.HasScopes(scopes...) {
		return nil
	}
	err := &ScopeError{Required: append([]string(nil), scopes...)}
	v.metrics.count(source, outcomeIndex(err))
	return err
}

// verify is the decision, top to bottom, and reports whether the cache
// answered.
//
// A cached key is tried before the secret's form is checked: the digest
// covers the whole secret, so a match proves it is the secret that was
// issued, which is well-formed and has a good checksum. Only when nothing
// matches is the form checked, so that a typo is still told as malformed.
// A secret that is not in keygate's form at all is looked up among the
// imported keys, and only when some were imported (docs/verification.md).
func (v *Verifier) verify(ctx context.Context, sn *stripe, secret string, scopes []string, cost int64, client netip.Addr, start time.Time) (res Result, hit bool, err error) {
	if secret == "" {
		return res, false, ErrMissing
	}
	now := start
	if !v.wallClock {
		now = v.store.now()
	}

	// The record: from the cache when the digest matches, else from Redis.
	digests := &v.store.digests
	prefix := v.store.secretPrefix(secret)
	ours := len(secret) == len(prefix)+bodyLen && secret[:len(prefix)] == prefix
	var kid keyID
	var e *cacheEntry
	if ours {
		// Any 32 characters make an ID here; only a checked one is loaded.
		kid = parseKeyID(secret[len(prefix) : len(prefix)+idHexLen])
		if v.cache != nil && v.live.at(now) {
			e = v.cache.get(&kid, now)
		}
	}
	if e != nil && digests.match(e.hashKey, e.digest, secret) {
		hit = true
	} else {
		idHex, err := parseSecret(prefix, secret)
		if err != nil && !ours && v.store.imports.mayExist() {
			// Not keygate's form: an imported key's secret, if it is one.
			idHex, err = v.store.importedID(ctx, secret)
		}
		if err != nil {
			return res, false, err
		}
		if e != nil {
			return Result{id: e.key.ID}, true, ErrNotFound // a well-formed secret, not the key's
		}
		if !ours {
			kid = parseKeyID(idHex)
			if v.cache != nil && v.live.at(now) {
				e = v.cache.get(&kid, now)
			}
		}
		if e == nil {
			if e, err = v.fill(ctx, idHex, &kid, now); err != nil {
				return res, false, err
			}
		}
		if !digests.match(e.hashKey, e.digest, secret) {
			return Result{id: e.key.ID}, false, ErrNotFound
		}
	}
	k := e.key
	res.id = k.ID

	// Its state, where the request comes from, what the route requires,
	// then what it spends.
	if out, err := refused(k, now); err != nil {
		return Result{Key: out, id: k.ID}, hit, err
	}
	if len(k.AllowedCIDRs) > 0 && !e.admits(k, client) {
		return Result{Key: k, id: k.ID}, hit, ErrIPNotAllowed
	}
	if !k.HasScopes(scopes...) {
		// A copy, so that the caller's scopes do not escape: variadic
		// arguments stay on their stacks.
		return Result{Key: k, id: k.ID}, hit, &ScopeError{Required: append([]string(nil), scopes...)}
	}
	if e.limited(k) {
		res.Limits, err = v.loads.meter(ctx, k, &e.keyState, max(cost, 1), now)
		if err != nil {
			return Result{Key: k, Limits: res.Limits, id: k.ID}, hit, err
		}
		if c := res.Limits.Credits; c != nil && *c == 0 && v.opts.CreditsExhausted != nil {
			v.opts.CreditsExhausted(k)
		}
	}
	res.Key = v.store.use(sn, k, now, &e.recorded)
	if e.hashKey != digests.currentID && e.rehashed.CompareAndSwap(false, true) {
		// Digested under an older hash key: the next flush writes it anew.
		v.store.rehashes.add(k.ID, e.digest, digests.current.sum(secret), digests.currentID)
	}
	return res, hit, nil
}

// fill loads a record and caches it, unless the subscription is not live or
// an invalidation or a flush came while it was loading.
func (v *Verifier) fill(ctx context.Context, idHex string, kid *keyID, now time.Time) (*cacheEntry, error) {
	caching := v.cache != nil && v.live.at(now)
	var gen uint64
	if caching {
		gen = v.cache.generation(kid)
	}
	rec, err := v.loads.load(ctx, idPrefix+idHex)
	if err != nil {
		return nil, err
	}
	if v.afterLoad != nil {
		v.afterLoad()
	}
	e := &cacheEntry{key: rec.key, digest: rec.digest, hashKey: rec.hashKey, keyState: rec.keyState, loaded: now}
	if caching {
		v.cache.insert(kid, e, gen)
	}
	return e, nil
}

// sweep drops expired cache entries every half TTL (at most every
// minute, at least every second) until Close.
func (v *Verifier) sweep() {
	defer v.wg.Done()
	t := time.NewTicker(min(max(v.opts.CacheTTL/2, time.Second), time.Minute))
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.cache.sweep(v.store.now())
		}
	}
}

// empty drops the whole cache and counts why. Unless the reason is a
// lapsed registration (which loses no message), an invalidation may have
// been missed, and with it the news of a first import: the verifier then
// looks foreign secrets up until it has read the flag again.
func (v *Verifier) empty(reason string) {
	v.cache.flush()
	if reason != flushLapse {
		v.store.imports.forget()
	}
	v.metrics.flushes.WithLabelValues(reason).Inc()
}

// Ready reports whether the verifier can answer as docs/revocation.md says: Redis
// answers a PING and, with a cache, the invalidation subscription is live.
// Otherwise it returns an error wrapping [ErrUnavailable].
func (v *Verifier) Ready(ctx context.Context) error {
	if v.cache != nil && !v.live.at(v.store.now()) {
		return fmt.Errorf("invalidation subscription is not live: %w", ErrUnavailable)
	}
	if err := v.store.rdb.Ping(ctx).Err(); err != nil {
		return unavailable("pinging redis", err)
	}
	return nil
}

// Close unsubscribes the verifier, removes it from the registry of live
// verifiers and empties its cache. It does not close the store.
func (v *Verifier) Close() error {
	v.closing.Do(func() {
		close(v.stop)
		v.wg.Wait()
		if v.cache != nil {
			v.cache.flush()
		}
	})
	return nil
}

// Outcome names the result of a verification as the metrics label it:
// valid, missing, malformed, not_found, revoked, expired,
// insufficient_scope, unavailable, rate_limited, usage_exceeded, disabled
// or ip_not_allowed.
func Outcome(err error) string { return outcomes[outcomeIndex(err)] }

// outcomeIndex is the index of err's outcome in outcomes.
func outcomeIndex(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUnavailable):
		return 7
	case errors.Is(err, ErrMissing):
		return 1
	case errors.Is(err, ErrMalformed):
		return 2
	case errors.Is(err, ErrNotFound):
		return 3
	case errors.Is(err, ErrRevoked):
		return 4
	case errors.Is(err, ErrExpired):
		return 5
	case errors.Is(err, ErrInsufficientScope):
		return 6
	case errors.Is(err, ErrRateLimited):
		return 8
	case errors.Is(err, ErrUsageExceeded):
		return 9
	case errors.Is(err, ErrDisabled):
		return 10
	case errors.Is(err, ErrIPNotAllowed):
		return 11
	}
	return 7
}
