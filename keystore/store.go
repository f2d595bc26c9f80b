package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Options configure a [Store]. The zero value works.
type Options struct {
	// Namespace prefixes every Redis key and channel. Default "keygate".
	Namespace string
	// KeyPrefix starts every secret: letters, digits and "_", ending in "_".
	// Default "ak_".
	KeyPrefix string
	// AcceptedKeyPrefixes are earlier KeyPrefix values: secrets issued
	// under them still verify, and new ones get KeyPrefix. Default none:
	// changing KeyPrefix alone makes every existing secret malformed.
	AcceptedKeyPrefixes []string
	// HashKey, when set, makes digests HMAC-SHA-256 under it instead of
	// SHA-256 (KEYGATE_HASH_KEY). Changing it alone makes every existing
	// key unverifiable: rotate with HashKeys. With HashKeys set, it is the
	// key of the records written before them.
	HashKey []byte
	// HashKeys (KEYGATE_HASH_KEYS) are named HMAC keys for digests, the
	// first one current: new keys are digested under it. A key digested
	// under another entry, or before HashKeys were set (under HashKey, or
	// plain SHA-256 without one), still verifies, and is re-digested under
	// the current entry at its next successful verification (written with
	// the last-used times). Default none.
	HashKeys []HashKey
	// LastUsedFlush is how often recorded uses are written to Redis.
	// Default 1s; negative disables the background flush (call
	// [Store.FlushLastUsed] yourself; Close still flushes).
	LastUsedFlush time.Duration
	// Now is the clock that decides expiry and timestamps. Default time.Now.
	Now func() time.Time
	// Logger receives failures of background work. Default slog.Default().
	Logger *slog.Logger
	// InvalidationWait is how long [Store.Revoke], [Store.Update] and
	// [Store.Delete] wait for every registered [Verifier], in any process,
	// to acknowledge that it dropped the key (KEYGATE_INVALIDATION_WAIT).
	// Default 250ms. A verifier that has not answered by then is named in a
	// warning, and waited for until its registration lapses (at most its
	// [VerifierOptions.SubscriptionStale]): only then does the call return.
	// Negative publishes the invalidation without waiting at all, which
	// gives up the guarantee of docs/revocation.md; it exists for tools
	// that only write.
	InvalidationWait time.Duration
	// Registerer receives the store's metrics: keygate_last_used_flushes_total
	// and keygate_store_errors_total{op}. Default: none.
	Registerer prometheus.Registerer
	// ReplicaWait, when positive, makes [Store.Revoke], [Store.Update] and
	// [Store.Delete] wait up to this long for a replica of the key's master
	// to confirm the change (Redis WAIT 1), so that a failover right after
	// they return cannot undo it. Default 0: no wait. Set it only where every
	// master has a replica (Sentinel, Cluster with replicas): without one,
	// every change waits all of it. A change no replica confirmed in time
	// still succeeds (it is in effect on the master), logged as a warning
	// and counted in keygate_store_errors_total{op="replica_wait"}.
	ReplicaWait time.Duration
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "keygate"
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "ak_"
	}
	if o.LastUsedFlush == 0 {
		o.LastUsedFlush = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.InvalidationWait == 0 {
		o.InvalidationWait = defaultInvalidationWait
	}
	return o
}

const defaultInvalidationWait = 250 * time.Millisecond

// HashKey is one entry of [Options.HashKeys]: an HMAC key and the ID that
// records digested under it carry.
type HashKey struct {
	ID     string // letters, digits, ".", "_" and "-", at most 32; not "sha256"
	Secret []byte
}

// ValidHashKeyID reports whether id can name a [HashKey].
func ValidHashKeyID(id string) bool {
	if id == "" || len(id) > 32 || id == importedHashKey {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isAlnum(id[i]) && id[i] != '.' && id[i] != '_' && id[i] != '-' {
			return false
		}
	}
	return true
}

// Store keeps API keys in Redis. Its methods are safe for concurrent use.
//
// Errors: [ErrNotFound] for an unknown key, a [*ValidationError] for input
// that breaks the documented limits, and an error wrapping [ErrUnavailable]
// when Redis cannot be reached. [Store.Verify] adds [ErrMalformed],
// [ErrRevoked], [ErrDisabled] and [ErrExpired].
//
// Revoke, Update, Delete, Roll and RevokeAll return only once no
// [Verifier] sharing the Redis (in this process or another) can admit the
// key (or keys) beyond its new state; see docs/revocation.md. When that cannot be confirmed they return
// an error wrapping [ErrInvalidationUnconfirmed]: the change is stored.
type Store struct {
	rdb      redis.UniversalClient
	opts     Options
	names    keyNames
	digests  digests
	imports  importState
	lastUsed lastUsed
	rehashes rehashes
	history  history
	metrics  *storeMetrics

	// invalidationWait is Options.InvalidationWait, which a Verifier may
	// replace (VerifierOptions.InvalidationWait).
	invalidationWait atomic.Int64
	// layoutReady is set once the listing indexes are known to be in the
	// current layout (migrate.go).
	layoutReady atomic.Bool

	stop     chan struct{}
	done     chan struct{}
	closeErr error
	closing  sync.Once

	// waited, when set (by tests), learns how long each invalidation waited
	// for acknowledgements and which instances did not answer.
	waited func(d time.Duration, missing []string)
}

// New returns a store on rdb, which it does not close. Call [Store.Close]
// to stop the background flush of last-used times and flush them a last time.
func New(rdb redis.UniversalClient, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	for _, p := range append([]string{opts.KeyPrefix}, opts.AcceptedKeyPrefixes...) {
		if !ValidPrefix(p) {
			return nil, fmt.Errorf("keystore: key prefix %q must be letters, digits and _, ending in _, at most 32 characters", p)
		}
	}
	seen := map[string]bool{}
	for i, k := range opts.HashKeys {
		switch {
		case !ValidHashKeyID(k.ID):
			return nil, fmt.Errorf("keystore: hash key %d: its ID must be letters, digits, '.', '_' and '-', at most 32, and not %q", i+1, importedHashKey)
		case len(k.Secret) == 0:
			return nil, fmt.Errorf("keystore: hash key %s: empty", k.ID)
		case seen[k.ID]:
			return nil, fmt.Errorf("keystore: hash key %s: given twice", k.ID)
		}
		seen[k.ID] = true
	}
	m, err := newStoreMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("keystore: registering metrics: %w", err)
	}
	s := &Store{
		rdb:     rdb,
		opts:    opts,
		names:   keyNames{ns: opts.Namespace},
		digests: newDigests(opts.HashKey, opts.HashKeys),
		metrics: m,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	s.invalidationWait.Store(int64(opts.InvalidationWait))
	s.rehashes.pending = make(map[string]rehash)
	if opts.LastUsedFlush > 0 {
		go s.flushLoop(opts.LastUsedFlush)
	} else {
		close(s.done)
	}
	return s, nil
}

// Close stops the background flush and writes the last-used times still in
// memory. It does not close the Redis client.
func (s *Store) Close() error {
	s.closing.Do(func() {
		close(s.stop)
		<-s.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.closeErr = errors.Join(s.FlushLastUsed(ctx), s.FlushUsage(ctx))
	})
	return s.closeErr
}

// Namespace is the prefix of the store's Redis keys and channels.
func (s *Store) Namespace() string { return s.opts.Namespace }

// Client is the Redis client the store uses.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

func (s *Store) now() time.Time { return s.opts.Now() }

// keyNames builds the store's Redis key names; see README.md for the layout.
type keyNames struct{ ns string }

func (n keyNames) record(id string) string      { return n.ns + ":key:" + id }
func (n keyNames) invalidate() string           { return n.ns + ":invalidate" }
func (n keyNames) imports() string              { return n.ns + ":imports" }
func (n keyNames) imported(index string) string { return n.ns + ":import:" + index }

// The invalidation keys share the hash tag {inv}: scripts touch several.
func (n keyNames) inv() string                 { return n.ns + ":{inv}:" }
func (n keyNames) verifiers() string           { return n.inv() + "verifiers" }
func (n keyNames) seq() string                 { return n.inv() + "seq" }
func (n keyNames) open() string                { return n.inv() + "open" }
func (n keyNames) pending(nonce string) string { return n.inv() + "pending:" + nonce }
func (n keyNames) done(nonce string) string    { return n.inv() + "done:" + nonce }

// IsEphemeral reports whether the Redis key belongs to the invalidation
// machinery of the namespace (verifier registry, sequence, announcements,
// acknowledgements): state that verifiers recreate when they start, which
// a persistence layer of a single process need not save. Everything else
// in the namespace is durable.
func IsEphemeral(namespace, key string) bool {
	return strings.HasPrefix(key, keyNames{namespace}.inv())
}

// Create stores a new key and returns it with its secret, which is shown
// this once and never stored.
func (s *Store) Create(ctx context.Context, p CreateParams) (*APIKey, error) {
	if err := validateCreate(&p); err != nil {
		return nil, err
	}
	k, err := s.newKey(p)
	if err != nil {
		return nil, err
	}
	secret, err := newSecret(s.opts.KeyPrefix, k.ID)
	if err != nil {
		return nil, err
	}
	digest := s.digests.current.sum(secret)
	if err := s.add(ctx, opCreate, &record{key: k, digest: string(digest[:]), hashKey: s.digests.currentID}); err != nil {
		return nil, err
	}
	out := *k
	out.Expired = k.ExpiredAt(s.now())
	out.Secret = secret
	return &out, nil
}

// newKey returns a new key with a fresh ID, as validated params describe
// it.
func (s *Store) newKey(p CreateParams) (*APIKey, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	now := s.now().UnixMilli()
	k := &APIKey{
		Object:      KeyType,
		ID:          id,
		Type:        KeyType,
		Name:        p.Name,
		Subject:     p.Subject,
		Description: nonEmpty(p.Description),
		Claims:      p.Claims,
		Scopes:      append([]string{}, p.Scopes...),
		CreatedBy:   nonEmpty(p.CreatedBy),
		CreatedAt:   now,
		UpdatedAt:   now,
		RateLimits:  append([]RateLimit{}, p.RateLimits...),
		Enabled:     p.Enabled == nil || *p.Enabled,
		// Checked by checkCIDRs.
		AllowedCIDRs: append([]string{}, p.AllowedCIDRs...),
	}
	if p.Credits != nil {
		c := *p.Credits
		c.LastRefillAt = nil
		if c.Refill != nil {
			r := *c.Refill
			if r.Interval == refillMonth && r.DayOfMonth == 0 {
				r.DayOfMonth = 1
			}
			c.Refill = &r
		}
		k.Credits = &c
	}
	if p.SecondsUntilExpiration != nil {
		exp := now + *p.SecondsUntilExpiration*1000
		k.Expiration = &exp
	}
	return k, nil
}

// add writes a new key's record and puts it in the listing indexes; extra
// are more fields of the record. Create, Import and Roll (the new key) add
// keys this way.
func (s *Store) add(ctx context.Context, op string, rec *record, extra ...any) error {
	k := rec.key
	// Journal, record, indexes (index.go): a crash leaves a journal entry,
	// which a listing repairs, and a key whose secret nobody was given.
	journaled, err := s.beginChange(ctx, k.ID)
	if err != nil {
		return s.unavailable(op, "journaling key "+k.ID, err)
	}
	if err := s.rdb.HSet(ctx, s.names.record(k.ID), append(rec.fields(), extra...)...).Err(); err != nil {
		return s.unavailable(op, "writing key "+k.ID, err)
	}
	s.indexAfter(ctx, op, placementOf(k, s.now()), journaled)
	return nil
}

// discard removes a new key that was never shown to anyone (a roll that
// failed), record and index entries, as well as it can: journal, record,
// indexes, like any change that moves a key between indexes.
func (s *Store) discard(ctx context.Context, k *APIKey) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), withdrawTimeout)
	defer cancel()
	journaled, err := s.beginChange(ctx, k.ID)
	if err == nil {
		err = s.rdb.Del(ctx, s.names.record(k.ID)).Err()
	}
	if err == nil {
		err = s.index(ctx, placement{id: k.ID, subject: k.Subject, place: placeNone}, journaled)
	}
	if err != nil {
		s.opts.Logger.Warn("removing a key that was never shown", "id", k.ID, "err", err)
	}
}

// Get returns the key with the given ID, or [ErrNotFound].
func (s *Store) Get(ctx context.Context, id string) (*APIKey, error) {
	rec, err := s.load(ctx, id, opGet)
	if err != nil {
		return nil, err
	}
	return rec.key, nil
}

// load reads one record in one round trip; op names the caller in
// keygate_store_errors_total.
func (s *Store) load(ctx context.Context, id, op string) (*record, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.names.record(id)).Result()
	if err != nil {
		return nil, s.unavailable(op, "loading key "+id, err)
	}
	rec, ok := decodeRecord(id, h, s.now())
	if !ok {
		return nil, ErrNotFound
	}
	return rec, nil
}

// Verify checks a secret and returns its key. The key's use is recorded
// and written to last_used_at at the next flush.
//
// A bad secret is an outcome, not a failure: [ErrMalformed] (decided without
// I/O), [ErrNotFound], [ErrRevoked] or [ErrExpired]. With the last two the key
// is returned as well, so that callers can log which key was refused. Only an
// error wrapping [ErrUnavailable] means the answer is unknown. Verify costs
// one Redis round trip. It knows only secrets in keygate's own form:
// imported keys ([Store.Import]), allowed CIDRs, rate limits and credits
// are a [Verifier]'s.
func (s *Store) Verify(ctx context.Context, secret string) (*APIKey, error) {
	idHex, err := parseSecret(s.secretPrefix(secret), secret)
	if err != nil {
		return nil, err
	}
	rec, err := s.load(ctx, idPrefix+idHex, opVerify)
	if err != nil {
		return nil, err
	}
	return s.decide(rec, secret, s.now())
}

// secretPrefix returns the prefix secret was issued under: KeyPrefix or
// one of AcceptedKeyPrefixes, told apart by the secret's length. It
// returns KeyPrefix for a secret under neither, which parsing then finds
// malformed.
func (s *Store) secretPrefix(secret string) string {
	p := s.opts.KeyPrefix
	n := len(secret) - bodyLen
	if n <= 0 || n == len(p) && secret[:n] == p || len(s.opts.AcceptedKeyPrefixes) == 0 {
		return p
	}
	for _, a := range s.opts.AcceptedKeyPrefixes {
		if len(a) == n && secret[:n] == a {
			return a
		}
	}
	return p
}

// decide checks secret against a key's record at now and records the use
// when it verifies. The digest is compared first, in constant time, so that
// revocation and expiry are told only to the key's holder.
func (s *Store) decide(rec *record, secret string, now time.Time) (*APIKey, error) {
	if !s.digests.match(rec.hashKey, rec.digest, secret) {
		return nil, ErrNotFound
	}
	k := rec.key
	if out, err := refused(k, now); err != nil {
		return out, err
	}
	if rec.hashKey != s.digests.currentID {
		s.rehashes.add(k.ID, rec.digest, s.digests.current.sum(secret), s.digests.currentID)
	}
	sn := takeStripe()
	out := s.use(sn, k, now, nil)
	sn.release()
	return out, nil
}

// refused returns, for a revoked, disabled or expired key, a copy of it
// with Expired as of now and [ErrRevoked], [ErrDisabled] or [ErrExpired];
// nil, nil otherwise.
func refused(k *APIKey, now time.Time) (*APIKey, error) {
	expired := k.ExpiredAt(now)
	if !k.Revoked && k.Enabled && !expired {
		return nil, nil
	}
	out := *k
	out.Expired = expired
	switch {
	case k.Revoked:
		return &out, ErrRevoked
	case !k.Enabled:
		return &out, ErrDisabled
	}
	return &out, ErrExpired
}

// use records a use of the valid key k at now, unless lastRecorded (the
// cache entry's memo, nil without one) says it already was in this
// millisecond: the flush writes only the newest use anyway, and a hot
// cached key then spares every core the lock of the pending uses. The use
// goes to the stripe sn. It returns a copy of k as it will read once the
// use is flushed; the copy shares k's slices and pointers, and costs one
// allocation.
func (s *Store) use(sn *stripe, k *APIKey, now time.Time, lastRecorded *atomic.Int64) *APIKey {
	ms := now.UnixMilli()
	if lastRecorded == nil || lastRecorded.Load() != ms {
		if lastRecorded != nil {
			lastRecorded.Store(ms)
		}
		s.lastUsed.record(sn, k.ID, ms)
	}
	u := &usedKey{key: *k, lastUsed: ms}
	u.key.LastUsedAt = &u.lastUsed
	u.key.Expired = false
	return &u.key
}

// usedKey holds a verified key and its last use in one allocation.
type usedKey struct {
	key      APIKey
	lastUsed int64
}

var updateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'x') == 1 then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 's') ~= ARGV[1] then return -1 end
local n = tonumber(ARGV[3])
local set = {'ua', ARGV[2]}
for i = 4, 3 + 2 * n do set[#set + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(set))
for i = 4 + 2 * n, #ARGV do
  if ARGV[i] == 't:*' then
    for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
      if string.sub(f, 1, 2) == 't:' then redis.call('HDEL', KEYS[1], f) end
    end
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return redis.call('HGETALL', KEYS[1])
`)

// Update changes the given fields of a key, atomically, and returns it
// once every live [Verifier] has dropped its cached copy (or
// [Options.InvalidationWait] has passed).
func (s *Store) Update(ctx context.Context, id string, p UpdateParams) (*APIKey, error) {
	if err := validateUpdate(&p); err != nil {
		return nil, err
	}
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	now := s.now().UnixMilli()
	var set []any
	var del []any
	if p.Name != nil {
		set = append(set, fName, *p.Name)
	}
	if p.Enabled != nil {
		if *p.Enabled {
			del = append(del, fDisabled)
		} else {
			set = append(set, fDisabled, "1")
		}
	}
	if p.AllowedCIDRs != nil {
		if len(*p.AllowedCIDRs) == 0 {
			del = append(del, fCIDRs)
		} else {
			set = append(set, fCIDRs, strings.Join(*p.AllowedCIDRs, ","))
		}
	}
	if p.Description != nil {
		if *p.Description == "" {
			del = append(del, fDescription)
		} else {
			set = append(set, fDescription, *p.Description)
		}
	}
	if p.Claims != nil {
		if string(p.Claims) == "null" {
			del = append(del, fClaims)
		} else {
			set = append(set, fClaims, string(p.Claims))
		}
	}
	if p.Scopes != nil {
		if len(*p.Scopes) == 0 {
			del = append(del, fScopes)
		} else {
			set = append(set, fScopes, strings.Join(*p.Scopes, " "))
		}
	}
	switch {
	case p.NeverExpires:
		del = append(del, fExpiration)
	case p.SecondsUntilExpiration != nil:
		set = append(set, fExpiration, now+*p.SecondsUntilExpiration*1000)
	}
	if p.RateLimits != nil {
		// New limits start afresh: their state goes.
		del = append(del, tatPrefix+"*")
		if len(*p.RateLimits) == 0 {
			del = append(del, fRateLimits)
		} else {
			set = append(set, fRateLimits, encodeRateLimits(*p.RateLimits))
		}
	}
	switch {
	case p.NoCredits:
		del = append(del, fCredits, fRefill, fLastRefill)
	case p.Credits != nil:
		// A balance set now is not refilled until the next boundary.
		set = append(set, fCredits, p.Credits.Remaining, fLastRefill, now)
		if r := p.Credits.Refill; r != nil {
			set = append(set, fRefill, encodeRefill(r))
		} else {
			del = append(del, fRefill)
		}
	}
	args := append([]any{p.Subject, now, len(set) / 2}, set...)
	args = append(args, del...)
	var key *APIKey
	write := func() (p placement, err error) {
		key, p, err = s.changedRecord(id, opUpdate, "updating key "+id,
			updateScript.Run(ctx, s.writer(), []string{s.names.record(id)}, args...))
		return p, err
	}
	err := s.change(ctx, id, opUpdate, "updating key "+id, func() error {
		if p.NeverExpires || p.SecondsUntilExpiration != nil || p.Enabled != nil {
			return s.reindexing(ctx, id, opUpdate, write)
		}
		_, err := write()
		return err
	})
	return key, err
}

// changedRecord decodes the reply of cmd, a script that changed the record
// of id, and returns the key and where it now belongs in the indexes. A
// failed script is unavailable, counted under op.
func (s *Store) changedRecord(id, op, doing string, cmd *redis.Cmd) (*APIKey, placement, error) {
	reply, err := cmd.Result()
	if err != nil {
		return nil, placement{}, s.unavailable(op, doing, err)
	}
	rec, err := s.scriptRecord(id, reply)
	if err != nil {
		return nil, placement{}, err
	}
	return rec.key, placementOf(rec.key, s.now()), nil
}

// scriptRecord decodes a script's reply: 0 for no key, -1 for a subject
// that does not match, else the key's HGETALL.
func (s *Store) scriptRecord(id string, reply any) (*record, error) {
	switch r := reply.(type) {
	case int64:
		if r == -1 {
			return nil, invalid("subject", "does not match the key's subject")
		}
		return nil, ErrNotFound
	case []any:
		rec, ok := decodeRecord(id, hashFromReply(r), s.now())
		if !ok {
			return nil, ErrNotFound
		}
		return rec, nil
	}
	return nil, ErrNotFound
}

var revokeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'x') == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'r') ~= '1' then
  redis.call('HSET', KEYS[1], 'r', '1', 'ua', ARGV[1])
  if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'rr', ARGV[3]) end
end
return redis.call('HGETALL', KEYS[1])
`)

// Revoke revokes a key and returns it. Revoking a revoked key changes nothing
// and keeps the first reason. reason may be nil; an empty reason is null. Like [Store.Update], it
// returns once every live [Verifier] has dropped the key from its cache.
func (s *Store) Revoke(ctx context.Context, id string, reason *string) (*APIKey, error) {
	if reason != nil {
		if err := checkText("revocation_reason", *reason, MaxDescriptionLen, false); err != nil {
			return nil, err
		}
	}
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	hasReason, text := "0", ""
	if reason != nil && *reason != "" { // an empty reason is no reason, stored as null
		hasReason, text = "1", *reason
	}
	var key *APIKey
	err := s.change(ctx, id, opRevoke, "revoking key "+id, func() error {
		return s.reindexing(ctx, id, opRevoke, func() (p placement, err error) {
			key, p, err = s.changedRecord(id, opRevoke, "revoking key "+id,
				revokeScript.Run(ctx, s.writer(), []string{s.names.record(id)}, s.now().UnixMilli(), hasReason, text))
			return p, err
		})
	})
	return key, err
}

// deleteScript replaces a record with a tombstone that keeps only the
// subject, for ARGV[1] ms, and returns the subject; nil when there was no
// record. Deleting a tombstone returns its subject again, so that a delete
// that is repeated (by the caller, or by go-redis after a timeout) still
// cleans the index and publishes its invalidation.
var deleteScript = redis.NewScript(`
local subject = redis.call('HGET', KEYS[1], 's')
if not subject then return false end
if redis.call('HEXISTS', KEYS[1], 'x') == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'x', '1', 's', subject)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return subject
`)

// tombstoneTTL is how long a deleted key's tombstone lasts: how long
// deleting it again answers as a success rather than [ErrNotFound].
const tombstoneTTL = 24 * time.Hour

// Delete removes a key for good. Like [Store.Update], it returns once no
// [Verifier] can still admit the key. Deleting a key deleted less than a
// day ago succeeds again (and publishes again).
func (s *Store) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return ErrNotFound
	}
	return s.change(ctx, id, opDelete, "deleting key "+id, func() error {
		// The record first: the key stops verifying at once.
		return s.reindexing(ctx, id, opDelete, func() (placement, error) {
			subject, err := deleteScript.Run(ctx, s.writer(), []string{s.names.record(id)}, tombstoneTTL.Milliseconds()).Text()
			if errors.Is(err, redis.Nil) {
				return placement{}, ErrNotFound
			}
			if err != nil {
				return placement{}, s.unavailable(opDelete, "deleting key "+id, err)
			}
			return placement{id: id, subject: subject, place: placeNone}, nil
		})
	})
}

// change applies write, a change to the key id, so that once it returns no
// [Verifier] admits the key beyond its new state: announce, write, publish,
// wait (see invalidation.go). write's error comes back as it is; a change
// that found no key is withdrawn and publishes nothing. op and doing name
// the call in metrics and errors.
func (s *Store) change(ctx context.Context, id, op, doing string, write func() error) error {
	return s.changeOf(ctx, invTarget{head: id}, op, doing, write)
}

// changeOf is [Store.change] of what t names: one key, every key of a
// subject, or the namespace's imported keys.
func (s *Store) changeOf(ctx context.Context, t invTarget, op, doing string, write func() error) error {
	a, err := s.announce(ctx)
	if err != nil {
		return s.unavailable(op, doing, err)
	}
	if err := write(); err != nil {
		if !errors.Is(err, ErrUnavailable) {
			s.withdraw(ctx, a)
		}
		// An unavailable write may have happened all the same: its
		// announcement stays, and the verifiers empty their caches once it
		// is publishBound old.
		return err
	}
	return s.invalidate(ctx, t, a)
}

// unavailable counts a failed Redis operation under op and wraps err so
// that errors.Is(err, ErrUnavailable) holds. A caller that went away
// (context.Canceled) says nothing about Redis: it is neither counted nor
// a reason to reload a Cluster's slot map.
func (s *Store) unavailable(op, doing string, err error) error {
	if storeFault(err) {
		s.metrics.errors.WithLabelValues(op).Inc()
		s.refreshTopology(err)
	}
	return unavailable(doing, err)
}

func nonEmpty(p *string) *string {
	if p == nil || *p == "" {
		return nil
	}
	v := *p
	return &v
}
