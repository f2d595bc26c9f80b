package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Revocation that holds under faults. docs/revocation.md states the
// guarantee and walks through every fault; in short:
//
//   - A change (revoke, update, delete, roll, bulk revoke, import) first
//     announces itself: a script adds a nonce to <ns>:{inv}:open, scored by
//     the server's clock. Then it writes the record (or records). Then one
//     script publishes "<target> <seq> <nonce>" on <ns>:invalidate (see
//     [invTarget]), where seq is the next value of <ns>:{inv}:seq, removes
//     the announcement, and copies the registered verifiers whose
//     registration has not lapsed into <ns>:{inv}:pending:<nonce>; it returns
//     them with their deadlines.
//   - A verifier that receives the invalidation drops the key and
//     acknowledges: a script removes it from the pending set, and the one
//     that empties the set pushes to <ns>:{inv}:done:<nonce>. The change
//     waits on that list with BLPOP: all acknowledged, in one round trip
//     whatever the number of verifiers. A verifier that does not answer is
//     waited for until its registration's deadline, past which it cannot be
//     serving from its cache; only then does the change answer.
//   - A verifier serves from its cache only until a local deadline that it
//     pushes forward at each heartbeat, and always short of the deadline the
//     heartbeat set in the registry (<ns>:{inv}:verifiers, by the server's
//     clock). A heartbeat pushes it forward only once a PING sent on the
//     subscription after it has come back, and only if by then the verifier
//     has received every invalidation up to the sequence number the
//     heartbeat read: so a heartbeat after a publish cannot extend a cache
//     that missed it. A gap in the sequence, a sequence that went back (a
//     failover), an announcement left unpublished for longer than
//     publishBound (a changer cut off after its write), or a registration
//     that had lapsed empties the cache.
//   - A publish that fails is retried until publishBound after the
//     announcement; then the change answers [ErrInvalidationUnconfirmed]:
//     the verifiers see the stale announcement at their next heartbeat and
//     empty their caches, or stop using them when their registrations lapse.
//
// The invalidation keys share the hash tag {inv}, so that the scripts that
// touch several of them work on Redis Cluster; PUBLISH reaches subscribers
// on every node.

// announceScript records that a change to a key is about to be written,
// by the server's clock, and returns that time (Unix ms).
var announceScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
return now
`)

// publishScript publishes the invalidation of the target ARGV[2] (with
// ARGV[5], "" or " <subject>", after the nonce) under the nonce ARGV[3]
// on the channel ARGV[1], numbered by the sequence KEYS[2]; it
// removes the announcement from KEYS[3] and copies the verifiers
// registered in KEYS[1] whose deadlines are still ahead into the pending
// set KEYS[4] (kept ARGV[4] ms). It returns the server's time, the
// sequence number, and the verifiers with their deadlines. Nothing happens
// in between: a verifier that registers afterwards was already subscribed
// and receives the invalidation before any heartbeat of its can count.
var publishScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%.0f', now), '+inf', 'WITHSCORES')
local seq = redis.call('INCR', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[3])
local ids = {}
for i = 1, #live, 2 do
  ids[#ids + 1] = live[i]
  if #ids == 1000 then
    redis.call('SADD', KEYS[4], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then redis.call('SADD', KEYS[4], unpack(ids)) end
if #live > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[4]) end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. seq .. ' ' .. ARGV[3] .. ARGV[5])
return {now, seq, live}
`)

// ackScript acknowledges an invalidation for the verifier ARGV[1]: it
// leaves the pending set KEYS[1], and the last to leave tells the waiting
// changer through the list KEYS[2] (kept ARGV[2] ms).
var ackScript = redis.NewScript(`
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 0
`)

// heartbeatScript registers the verifier ARGV[1] until ARGV[2] ms from now
// by the server's clock, so that clock skew between hosts does not matter,
// and forgets verifiers and announcements a minute old. It returns whether
// the verifier was not registered, or its registration had lapsed (the
// first time, after a lapse, a failover or a flush), the current sequence
// number, and the nonces of up to 16 announcements older than ARGV[3] ms
// that were never published.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
local added = 0
if not prev or tonumber(prev) <= now then added = 1 end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - 60000))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('(%.0f', now - 60000))
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local lost = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', string.format('(%.0f', now - tonumber(ARGV[3])), 'LIMIT', 0, 16)
return {added, seq, lost}
`)

const (
	// publishBound is how long after its announcement a change keeps
	// trying to publish its invalidation; verifiers treat an announcement
	// older than that as lost and empty their caches.
	publishBound = time.Second
	// pendingTTL is how long the acknowledgement keys of one invalidation
	// live.
	pendingTTL = time.Minute
	// deregisterTimeout bounds the removal of a verifier from the registry.
	deregisterTimeout = time.Second
	// withdrawTimeout bounds the removal of an announcement whose change
	// found no key.
	withdrawTimeout = time.Second
	// maxBlock is the longest single BLPOP: go-redis's read timeout (3s by
	// default) must cover it.
	maxBlock = 900 * time.Millisecond
	// Backoff between subscription attempts.
	minBackoff = 10 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// ErrInvalidationUnconfirmed reports a change (revoke, update, delete) that
// is stored but whose cache invalidation could not be confirmed: the
// publish failed for [publishBound], or the caller's context ended while
// waiting. Every verifier applies the change within its stale window (see
// [VerifierOptions.SubscriptionStale]) plus a second; repeating the call
// publishes again and succeeds once confirmed. It is not [ErrUnavailable]:
// the change itself happened.
var ErrInvalidationUnconfirmed = errors.New("keystore: cache invalidation unconfirmed")

// invTarget is what one invalidation covers, and how its message reads:
//
//	<key id> <seq> <nonce>            one key
//	subject <seq> <nonce> <subject>   every key of a subject (a bulk revoke)
//	imports <seq> <nonce>             imported keys exist (the first import)
//
// The subject comes last because it may hold spaces. A verifier of an
// earlier version reads the last two as malformed and empties its cache,
// which is safe.
type invTarget struct {
	head    string // a key ID, targetSubject or targetImports
	subject string // for targetSubject
}

const (
	targetSubject = "subject"
	targetImports = "imports"
)

func (t invTarget) String() string {
	if t.head == targetSubject {
		return "the keys of a subject"
	}
	return t.head
}

// suffix is what the message carries after its nonce.
func (t invTarget) suffix() string {
	if t.head == targetSubject {
		return " " + t.subject
	}
	return ""
}

// announcement is a change announced in <ns>:{inv}:open.
type announcement struct {
	nonce string
}

// announce records a change about to be written to a key.
func (s *Store) announce(ctx context.Context) (announcement, error) {
	nonce, err := randomHex(16)
	if err != nil {
		return announcement{}, err
	}
	if err := announceScript.Run(ctx, s.rdb, []string{s.names.open()}, nonce).Err(); err != nil {
		return announcement{}, err
	}
	return announcement{nonce: nonce}, nil
}

// withdraw removes an announcement whose change found nothing to change.
// If it cannot, verifiers empty their caches once, after publishBound.
func (s *Store) withdraw(ctx context.Context, a announcement) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), withdrawTimeout)
	defer cancel()
	if err := s.rdb.ZRem(ctx, s.names.open(), a.nonce).Err(); err != nil {
		s.opts.Logger.Debug("withdrawing a change announcement", "err", err)
	}
}

// published is what publishScript returned.
type published struct {
	received time.Time        // local, when the reply came
	now      int64            // server time of the publish, Unix ms
	live     map[string]int64 // registered verifier -> deadline, server Unix ms
}

// invalidate publishes the invalidation of t, announced by a, and waits
// until no verifier can serve the old state from its cache: each has
// acknowledged, or its registration's deadline has passed. It returns nil,
// or an error wrapping [ErrInvalidationUnconfirmed].
func (s *Store) invalidate(ctx context.Context, t invTarget, a announcement) error {
	id := t.String()
	p, err := s.publish(ctx, t, a)
	if err != nil {
		s.metrics.errors.WithLabelValues(opInvalidate).Inc()
		s.opts.Logger.Error("publishing a cache invalidation: the change is stored; verifiers apply it within their stale window",
			"id", id, "err", err)
		return fmt.Errorf("publishing the invalidation of %s: %w: %w", id, ErrInvalidationUnconfirmed, err)
	}
	wait := time.Duration(s.invalidationWait.Load())
	if len(p.live) == 0 || wait < 0 {
		return nil
	}
	start := time.Now()
	missing, err := s.await(ctx, a.nonce, p, start.Add(wait))
	waited := time.Since(start)
	if s.waited != nil {
		s.waited(waited, missing)
	}
	if err != nil {
		return fmt.Errorf("waiting for verifiers to drop %s: %w: %w", id, ErrInvalidationUnconfirmed, err)
	}
	return nil
}

// publish runs publishScript until it succeeds or publishBound has passed.
// The caller's cancellation does not stop it: the change is already
// written. (A write slower than publishBound, under ReplicaWait say, makes
// verifiers see its announcement as lost and empty their caches once:
// harmless.)
func (s *Store) publish(ctx context.Context, t invTarget, a announcement) (*published, error) {
	deadline := time.Now().Add(publishBound)
	pctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	n := s.names
	keys := []string{n.verifiers(), n.seq(), n.open(), n.pending(a.nonce)}
	for {
		reply, err := publishScript.Run(pctx, s.rdb, keys, n.invalidate(), t.head, a.nonce, pendingTTL.Milliseconds(), t.suffix()).Slice()
		if err == nil {
			return parsePublished(reply)
		}
		if pctx.Err() != nil {
			return nil, err
		}
		select {
		case <-pctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func parsePublished(reply []any) (*published, error) {
	p := &published{received: time.Now()}
	if len(reply) != 3 {
		return nil, fmt.Errorf("publish script replied %d values", len(reply))
	}
	now, ok := reply[0].(int64)
	live, ok2 := reply[2].([]any)
	if !ok || !ok2 || len(live)%2 != 0 {
		return nil, fmt.Errorf("publish script replied %T, %T", reply[0], reply[2])
	}
	p.now = now
	p.live = make(map[string]int64, len(live)/2)
	for i := 0; i < len(live); i += 2 {
		id, _ := live[i].(string)
		score, _ := live[i+1].(string)
		deadline, err := strconv.ParseFloat(score, 64)
		if id == "" || err != nil {
			return nil, fmt.Errorf("publish script replied a bad registration %v %v", live[i], live[i+1])
		}
		p.live[id] = int64(deadline)
	}
	return p, nil
}

// lapse is when, by the local clock, the registration of a verifier that
// publish read can no longer be in force. The deadline was read at the
// server's time p.now, before the reply came: counting from the reply
// errs on the late side.
func (p *published) lapse(id string) time.Time {
	return p.received.Add(time.Duration(p.live[id]-p.now) * time.Millisecond)
}

// await waits for the acknowledgements of the verifiers p read, until
// ackDeadline; then for those that did not answer, until their
// registrations lapse. It returns the verifiers that did not answer by
// ackDeadline. It costs one BLPOP when every verifier answers in time, and
// a SMEMBERS and at most a few more BLPOPs otherwise (one per maxBlock),
// whatever the number of verifiers. An error means ctx ended first.
func (s *Store) await(ctx context.Context, nonce string, p *published, ackDeadline time.Time) ([]string, error) {
	var last time.Time
	for id := range p.live {
		last = latest(last, p.lapse(id))
	}
	done := s.names.done(nonce)
	if s.blpopUntil(ctx, done, earliest(ackDeadline, last)) {
		return nil, nil
	}
	// Some did not answer in time: name them, and wait for the last of
	// their registrations to lapse (or for them to answer after all).
	var missing []string
	members, err := s.rdb.SMembers(ctx, s.names.pending(nonce)).Result()
	for _, id := range members {
		if _, ok := p.live[id]; ok {
			missing = append(missing, id)
		}
	}
	if err != nil || len(missing) == 0 {
		// Only the done list says that everyone answered: a pending set
		// that cannot be read, or is gone (evicted, lost in a failover),
		// says nothing. Wait for every registration to lapse.
		missing = missing[:0]
		for id := range p.live {
			missing = append(missing, id)
		}
	}
	slices.Sort(missing)
	var lapse time.Time
	for _, id := range missing {
		lapse = latest(lapse, p.lapse(id))
	}
	if len(missing) > 0 {
		s.opts.Logger.Warn("verifiers did not acknowledge a cache invalidation: waiting until their registrations lapse",
			"instances", missing, "wait", time.Until(lapse).Round(time.Millisecond))
	}
	if !s.blpopUntil(ctx, done, lapse) {
		// Nothing more to learn from Redis; the deadlines alone decide.
		if err := sleepUntil(ctx, lapse); err != nil {
			return missing, err
		}
	}
	return missing, ctx.Err()
}

// blpopUntil waits on the list key until deadline, in BLPOPs of at most
// maxBlock, and reports whether an element came. It returns false at once
// on a Redis error or when ctx ends.
func (s *Store) blpopUntil(ctx context.Context, key string, deadline time.Time) bool {
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return false
		}
		secs := strconv.FormatFloat(max(min(left, maxBlock).Seconds(), 0.001), 'f', 3, 64)
		_, err := s.rdb.Do(ctx, "blpop", key, secs).StringSlice()
		if err == nil {
			return true
		}
		if !errors.Is(err, redis.Nil) {
			if ctx.Err() == nil {
				s.metrics.errors.WithLabelValues(opInvalidate).Inc()
			}
			return false
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// liveness is what a verifier knows of its subscription and registration.
// The hot path reads one atomic pointer; the subscription goroutines change
// the rest under mu. Times come from the store's clock and are compared with
// Before, so that with [time.Now] a step of the wall clock changes nothing.
type liveness struct {
	// until is when the cache stops answering; nil when it may not.
	until atomic.Pointer[time.Time]
	hold  time.Duration       // how long past a heartbeat's sending it counts
	flush func(reason string) // empties the cache

	mu         sync.Mutex
	subscribed bool
	known      bool                 // seq is meaningful
	seq        uint64               // of the last invalidation received
	lost       map[string]time.Time // unpublished announcements handled, and when
	rounds     []round              // heartbeats whose PING is not answered yet, oldest first
	lastSign   time.Time
}

// round is one heartbeat and the PING sent after it.
type round struct {
	ping      uint64
	sent      time.Time // when the heartbeat was sent
	seqAtSend uint64    // the verifier's seq when it was sent
	knewSeq   bool
	beat      beat
}

// beat is what heartbeatScript returned.
type beat struct {
	added bool     // the registration had lapsed, or is new
	seq   uint64   // invalidations published so far
	lost  []string // nonces of announcements never published
}

// maxRounds bounds the heartbeats remembered while no PING is answered; the
// subscription is closed as unresponsive long before it matters.
const maxRounds = 64

// at reports whether the cache may answer at now.
func (l *liveness) at(now time.Time) bool {
	u := l.until.Load()
	return u != nil && now.Before(*u)
}

// reset forgets everything: a session begins or ended.
func (l *liveness) reset(now time.Time) {
	l.mu.Lock()
	l.until.Store(nil)
	l.subscribed = false
	l.known = false
	l.rounds = l.rounds[:0]
	l.lastSign = now
	l.mu.Unlock()
}

func (l *liveness) confirm(now time.Time) {
	l.mu.Lock()
	l.subscribed = true
	l.lastSign = now
	l.mu.Unlock()
}

// sequence returns what the verifier knows of the sequence, and whether it
// is subscribed: a heartbeat is sent only then.
func (l *liveness) sequence() (seq uint64, known, subscribed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, l.known, l.subscribed
}

func (l *liveness) silentFor(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Sub(l.lastSign)
}

// message records the invalidation numbered seq, received at now. Its key
// is already dropped; a number other than the next one means invalidations
// were missed (or the sequence went back in a failover): the whole cache
// goes.
func (l *liveness) message(seq uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastSign = now
	if l.known && seq != l.seq+1 {
		l.emptyLocked(flushGap)
	}
	l.seq, l.known = seq, true
}

// expect records a heartbeat that succeeded; r.ping is the PING about to
// be sent after it.
func (l *liveness) expect(r round) {
	l.mu.Lock()
	if len(l.rounds) == maxRounds {
		l.rounds = append(l.rounds[:0], l.rounds[1:]...)
	}
	l.rounds = append(l.rounds, r)
	l.mu.Unlock()
}

// pong records the answer to the PING numbered ping, received at now. If a
// heartbeat preceded that PING, every invalidation published before the
// heartbeat has been received by now (one connection delivers in order):
// the verifier checks that it has, empties its cache if not, and only then
// lets the cache answer until the heartbeat's sending plus hold.
func (l *liveness) pong(ping uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastSign = now
	i := 0
	for i < len(l.rounds) && l.rounds[i].ping < ping {
		i++
	}
	if i == len(l.rounds) || l.rounds[i].ping != ping {
		l.rounds = append(l.rounds[:0], l.rounds[i:]...)
		return
	}
	r := l.rounds[i]
	l.rounds = append(l.rounds[:0], l.rounds[i+1:]...)
	if !l.subscribed {
		return
	}
	b := r.beat
	var reason string
	switch {
	case b.added:
		// Unregistered for a while: changes may not have waited for us.
		reason = flushLapse
	case r.knewSeq && r.seqAtSend > b.seq:
		// The sequence went back: a failover lost its latest values.
		reason = flushSequence
	case l.known && l.seq < b.seq:
		// An invalidation published before the heartbeat never came.
		reason = flushGap
	case l.newLost(b.lost, now):
		// A change was written and its invalidation never published.
		reason = flushUnpublished
	}
	if reason != "" {
		l.emptyLocked(reason)
	}
	if !l.known || l.seq < b.seq || reason == flushSequence {
		l.seq, l.known = b.seq, true
	}
	l.noteLost(b.lost, now)
	until := r.sent.Add(l.hold)
	if u := l.until.Load(); u == nil || until.After(*u) {
		l.until.Store(&until)
	}
}

// Why a verifier emptied its whole cache, as keygate_cache_flushes_total
// labels it.
const (
	flushSubscription = "subscription" // a subscription began or ended
	flushGap          = "gap"          // an invalidation never came
	flushSequence     = "sequence"     // the sequence went back (failover)
	flushUnpublished  = "unpublished"  // a change was never published
	flushLapse        = "lapse"        // the registration had lapsed
	flushMalformed    = "malformed"    // an invalidation not understood
)

// lostMemory is how long a handled announcement is remembered: longer
// than the registry keeps it (a minute).
const lostMemory = 2 * time.Minute

// newLost reports whether nonces holds an announcement not handled yet;
// mu is held.
func (l *liveness) newLost(nonces []string, now time.Time) bool {
	for _, n := range nonces {
		if _, ok := l.lost[n]; !ok {
			return true
		}
	}
	return false
}

// noteLost remembers nonces as handled at now, and forgets the old ones;
// mu is held.
func (l *liveness) noteLost(nonces []string, now time.Time) {
	if l.lost == nil {
		l.lost = make(map[string]time.Time)
	}
	for _, n := range nonces {
		l.lost[n] = now
	}
	for n, at := range l.lost {
		if now.Sub(at) > lostMemory {
			delete(l.lost, n)
		}
	}
}

// emptyLocked empties the cache; mu is held.
func (l *liveness) emptyLocked(reason string) {
	if l.flush != nil {
		l.flush(reason)
	}
}

// subscription is one connection's worth of subscription.
type subscription struct {
	ps   *redis.PubSub
	kick chan struct{} // the subscription is confirmed: register and ping now
	done chan struct{} // the receiver has returned
}

// subscribe keeps the verifier subscribed to invalidations until Close, and
// drops the whole cache whenever a subscription ends.
func (v *Verifier) subscribe() {
	defer v.wg.Done()
	backoff := minBackoff
	for {
		began := time.Now()
		err := v.session()
		wasLive := v.live.at(v.store.now())
		v.live.reset(v.store.now())
		v.empty(flushSubscription)
		v.deregister()
		select {
		case <-v.stop:
			return
		default:
		}
		if wasLive {
			v.log.Warn("invalidation subscription lost: verifying against Redis until it is back",
				"instance", v.id, "err", err)
		} else {
			v.log.Debug("invalidation subscription failed", "instance", v.id, "err", err)
		}
		if time.Since(began) > maxBackoff {
			backoff = minBackoff
		}
		select {
		case <-v.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session runs one subscription until it fails, hangs or the verifier
// closes.
func (v *Verifier) session() error {
	v.live.reset(v.store.now())
	sub := &subscription{
		ps:   v.store.rdb.Subscribe(v.bg, v.channel),
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	var pinger sync.WaitGroup
	pinger.Add(1)
	go func() {
		defer pinger.Done()
		v.ping(sub)
	}()
	err := v.receive(sub)
	close(sub.done)
	sub.ps.Close()
	pinger.Wait()
	v.store.metrics.errors.WithLabelValues(opSubscribe).Inc() // receive only returns on failure
	return err
}

// receive handles what arrives on the subscription, in order.
func (v *Verifier) receive(sub *subscription) error {
	for {
		msg, err := sub.ps.Receive(v.bg)
		if err != nil {
			return err
		}
		if v.beforeReceive != nil && !v.beforeReceive(msg) {
			continue
		}
		now := v.store.now()
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Channel != v.channel {
				continue
			}
			if m.Kind != "subscribe" {
				return fmt.Errorf("subscription to %s ended: %s", m.Channel, m.Kind)
			}
			// Invalidations published before now may have been missed.
			v.empty(flushSubscription)
			v.live.confirm(now)
			v.sessions.Add(1)
			select {
			case sub.kick <- struct{}{}:
			default:
			}
		case *redis.Message:
			v.invalidated(m.Payload, now)
		case *redis.Pong:
			if seq, err := strconv.ParseUint(m.Payload, 10, 64); err == nil {
				v.live.pong(seq, now)
			}
		}
	}
}

// ping registers the verifier and proves the subscription live, every
// interval, and closes the subscription when it has been silent for longer
// than SubscriptionStale.
func (v *Verifier) ping(sub *subscription) {
	t := time.NewTicker(v.interval)
	defer t.Stop()
	var ping uint64
	for {
		select {
		case <-v.stop:
			sub.ps.Close()
			return
		case <-sub.done:
			return
		case <-t.C:
		case <-sub.kick:
		}
		now := v.store.now()
		if silent := v.live.silentFor(now); silent > v.opts.SubscriptionStale {
			v.log.Warn("invalidation subscription unresponsive: reconnecting", "instance", v.id, "silent", silent)
			sub.ps.Close()
			return
		}
		ping++
		if seq, known, subscribed := v.live.sequence(); subscribed {
			sent := v.store.now()
			if b, ok := v.heartbeat(); ok {
				v.live.expect(round{ping: ping, sent: sent, seqAtSend: seq, knewSeq: known, beat: b})
			}
			if !v.store.imports.known() {
				v.pollImports()
			}
		}
		ctx, cancel := context.WithTimeout(v.bg, v.opts.SubscriptionStale)
		err := sub.ps.Ping(ctx, strconv.FormatUint(ping, 10))
		cancel()
		if err != nil {
			sub.ps.Close()
			return
		}
	}
}

// heartbeat registers the verifier for SubscriptionStale more, by the
// server's clock. Locally the registration counts for three quarters of
// that, from before the call, once the PING after it is answered.
func (v *Verifier) heartbeat() (beat, bool) {
	ctx, cancel := context.WithTimeout(v.bg, v.opts.SubscriptionStale)
	defer cancel()
	n := v.store.names
	reply, err := heartbeatScript.Run(ctx, v.store.rdb, []string{n.verifiers(), n.seq(), n.open()},
		v.id, v.opts.SubscriptionStale.Milliseconds(), publishBound.Milliseconds()).Slice()
	b, ok := parseBeat(reply)
	if err != nil || !ok {
		v.store.metrics.errors.WithLabelValues(opHeartbeat).Inc()
		v.log.Debug("registering the verifier", "instance", v.id, "err", err)
		return beat{}, false
	}
	return b, true
}

// parseBeat decodes heartbeatScript's reply.
func parseBeat(reply []any) (beat, bool) {
	if len(reply) != 3 {
		return beat{}, false
	}
	added, ok1 := reply[0].(int64)
	seq, ok2 := reply[1].(int64)
	lost, ok3 := reply[2].([]any)
	if !ok1 || !ok2 || !ok3 {
		return beat{}, false
	}
	b := beat{added: added == 1, seq: uint64(seq)}
	for _, n := range lost {
		if s, ok := n.(string); ok {
			b.lost = append(b.lost, s)
		}
	}
	return b, true
}

// deregister removes the verifier from the registry, so that changes stop
// waiting for it. When it cannot, the registration lapses on its own.
func (v *Verifier) deregister() {
	ctx, cancel := context.WithTimeout(v.bg, deregisterTimeout)
	defer cancel()
	if err := v.store.rdb.ZRem(ctx, v.store.names.verifiers(), v.id).Err(); err != nil {
		v.log.Debug("deregistering the verifier", "instance", v.id, "err", err)
	}
}

// invalidated handles an invalidation (see [invTarget] for its forms): drop
// what it names, check the sequence, then acknowledge.
func (v *Verifier) invalidated(payload string, now time.Time) {
	head, rest, ok1 := strings.Cut(payload, " ")
	seqText, rest, ok2 := strings.Cut(rest, " ")
	nonce, subject, hasSubject := strings.Cut(rest, " ")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	switch {
	case !ok1 || !ok2 || err != nil || nonce == "":
		head = "" // malformed
	case head == targetSubject && hasSubject && subject != "":
		v.cache.dropSubject(subject)
	case head == targetImports && !hasSubject:
		v.store.imports.learn(true)
	case ValidID(head) && !hasSubject:
		kid := parseKeyID(head[len(idPrefix):])
		v.cache.invalidate(&kid)
	default:
		head = ""
	}
	if head == "" {
		// Not from this version of keygate: drop everything rather than
		// guess.
		v.log.Warn("malformed cache invalidation: emptying the cache", "instance", v.id)
		v.empty(flushMalformed)
		return
	}
	v.live.message(seq, now)
	v.metrics.invalidations.Inc()
	select {
	case v.acks <- nonce:
	case <-v.stop:
	}
}

// acknowledge sends acknowledgements, as many as are waiting in one
// pipeline.
func (v *Verifier) acknowledge() {
	defer v.wg.Done()
	batch := make([]string, 0, 64)
	for {
		select {
		case <-v.stop:
			return
		case nonce := <-v.acks:
			batch = append(batch[:0], nonce)
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case nonce := <-v.acks:
				batch = append(batch, nonce)
			default:
				break more
			}
		}
		ctx, cancel := context.WithTimeout(v.bg, v.opts.SubscriptionStale)
		err := v.ack(ctx, batch)
		cancel()
		if err != nil {
			v.store.metrics.errors.WithLabelValues(opAck).Inc()
			v.log.Warn("acknowledging cache invalidations", "instance", v.id, "err", err)
		}
	}
}

// ack acknowledges the invalidations of nonces in one pipeline of EVALSHA,
// loading the script first if Redis does not have it (a pipeline cannot
// fall back to EVAL command by command).
func (v *Verifier) ack(ctx context.Context, nonces []string) error {
	n := v.store.names
	run := func() error {
		_, err := v.store.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, nonce := range nonces {
				ackScript.EvalSha(ctx, p, []string{n.pending(nonce), n.done(nonce)}, v.id, pendingTTL.Milliseconds())
			}
			return nil
		})
		return err
	}
	err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = ackScript.Load(ctx, v.store.rdb).Err(); err == nil {
			err = run()
		}
	}
	return err
}

// newInstanceID names a verifier in the registry and in the warnings of
// changes it did not answer: host, process and a random part.
func newInstanceID() (string, error) {
	r, err := randomHex(4)
	if err != nil {
		return "", err
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid()) + ":" + r, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}
