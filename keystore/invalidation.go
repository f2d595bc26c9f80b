package keystore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Instant revocation (CONTRACT.md §3), as README.md lays it out in Redis:
//
//   - Every verifier with a cache subscribes to <ns>:invalidate, and while its
//     subscription is confirmed it registers its instance ID in the sorted
//     set <ns>:verifiers, scored by a deadline in the Redis server's clock
//     that its heartbeat pushes forward.
//   - Revoke, Update and Delete run one script on <ns>:verifiers that reads
//     the registered instances and publishes "<key id> <nonce>" on
//     <ns>:invalidate, atomically. They then wait, with BLPOP on the list
//     <ns>:ack:<nonce>, until every instance read has pushed its ID there, or
//     until the invalidation wait is over, and log the instances missing.
//   - A verifier that receives an invalidation drops the key from its cache,
//     fails every fill of the key in progress, and pushes its ID to the ack
//     list.
//   - A verifier serves from its cache only while it is registered and a
//     PING on its subscription connection, sent after it registered, came
//     back within SubscriptionStale. Pub/sub delivers in order on one
//     connection, so that answer also proves that every invalidation
//     published before the registration has been handled.
//
// Every Redis command touches one key (or none), so all of it works on
// Redis Cluster, where PUBLISH reaches subscribers on every node.

// publishScript returns the registered verifiers and publishes the
// invalidation in ARGV[2] on the channel ARGV[1], with nothing in between: a
// verifier that registers afterwards was already subscribed, so it receives
// the invalidation before it can serve from its cache.
var publishScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.0f', now), '+inf')
redis.call('PUBLISH', ARGV[1], ARGV[2])
return live
`)

// heartbeatScript registers the instance ARGV[1] until ARGV[2] ms from now
// by the server's clock, so that clock skew between hosts does not matter,
// and forgets instances gone for a minute. It returns 1 when the instance
// was not registered (the first time, or after a lapse, a failover or a
// flush), 0 when it only moved the deadline.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - 60000))
return added
`)

const (
	// ackTTL is how long an acknowledgement list outlives its last push,
	// for acknowledgements that come after the revoker stopped waiting.
	ackTTL = time.Minute
	// publishTimeout bounds the publish of an invalidation, which runs even
	// when the caller's context is done: the change is already in Redis.
	publishTimeout = 5 * time.Second
	// deregisterTimeout bounds the removal of a verifier from the registry.
	deregisterTimeout = time.Second
	// Backoff between subscription attempts.
	minBackoff = 10 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// invalidate publishes an invalidation of the key id and waits for the
// acknowledgements of every registered verifier. It is the store's
// afterChange: the change is already in Redis, so failures are logged and
// counted, not returned.
func (s *Store) invalidate(ctx context.Context, id string) {
	nonce, err := randomHex(16)
	if err != nil {
		s.opts.Logger.Error("publishing a cache invalidation", "id", id, "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	live, err := publishScript.Run(pctx, s.rdb, []string{s.names.verifiers()}, s.names.invalidate(), id+" "+nonce).StringSlice()
	cancel()
	if err != nil {
		s.metrics.errors.WithLabelValues(opInvalidate).Inc()
		s.opts.Logger.Error("publishing a cache invalidation: verifiers may serve the key from their caches until their subscriptions go stale",
			"id", id, "err", err)
		return
	}
	wait := time.Duration(s.invalidationWait.Load())
	if len(live) == 0 || wait < 0 {
		return
	}
	start := time.Now()
	missing, err := s.awaitAcks(ctx, s.names.ack(nonce), live, start.Add(wait))
	waited := time.Since(start)
	if s.waited != nil {
		s.waited(waited, missing)
	}
	if len(missing) > 0 {
		args := []any{"id", id, "waited", waited, "instances", missing}
		if err != nil {
			args = append(args, "err", err)
		}
		s.opts.Logger.Warn("verifiers did not acknowledge a cache invalidation", args...)
	}
}

// awaitAcks pops acknowledgements from key until every instance of live has
// answered or deadline has passed, and returns the instances that did not.
func (s *Store) awaitAcks(ctx context.Context, key string, live []string, deadline time.Time) ([]string, error) {
	pending := make(map[string]bool, len(live))
	for _, id := range live {
		pending[id] = true
	}
	var err error
	for len(pending) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		var got []string
		if left >= time.Second {
			// BLPop extends the read timeout by the block time, but only
			// takes whole seconds.
			got, err = s.rdb.BLPop(ctx, time.Second, key).Result()
		} else {
			secs := strconv.FormatFloat(max(left.Seconds(), 0.001), 'f', 3, 64)
			got, err = s.rdb.Do(ctx, "blpop", key, secs).StringSlice()
		}
		if errors.Is(err, redis.Nil) {
			err = nil
			continue
		}
		if err != nil {
			s.metrics.errors.WithLabelValues(opInvalidate).Inc()
			break
		}
		if len(got) == 2 {
			delete(pending, got[1])
		}
	}
	missing := make([]string, 0, len(pending))
	for id := range pending {
		missing = append(missing, id)
	}
	slices.Sort(missing)
	return missing, err
}

// liveness is what a verifier knows of its subscription. The hot path reads
// two atomic pointers; the subscription goroutines change them under mu.
// Times come from the store's clock and are compared with Sub and Before,
// so that with [time.Now] a step of the wall clock changes nothing.
type liveness struct {
	// proof is when the newest answered PING that counts was sent; nil
	// when there is none.
	proof atomic.Pointer[time.Time]
	// regUntil is until when the instance is surely registered; nil when it
	// is not.
	regUntil atomic.Pointer[time.Time]
	stale    time.Duration

	mu         sync.Mutex
	subscribed bool
	epoch      uint64     // answers to PINGs numbered below epoch do not count
	pings      []sentPing // PINGs not answered yet, oldest first
	lastSign   time.Time  // when the subscription last showed life
}

type sentPing struct {
	seq  uint64
	sent time.Time
}

// maxPendingPings bounds the PINGs remembered while none is answered; the
// subscription is closed as unresponsive long before it matters.
const maxPendingPings = 64

// at reports whether the cache may answer at now.
func (l *liveness) at(now time.Time) bool {
	p, r := l.proof.Load(), l.regUntil.Load()
	return p != nil && r != nil && now.Sub(*p) < l.stale && now.Before(*r)
}

func (l *liveness) isLive() bool { return l.proof.Load() != nil }

// reset forgets everything: a session begins or ended.
func (l *liveness) reset(now time.Time) {
	l.mu.Lock()
	l.proof.Store(nil)
	l.regUntil.Store(nil)
	l.subscribed = false
	l.epoch = math.MaxUint64
	l.pings = l.pings[:0]
	l.lastSign = now
	l.mu.Unlock()
}

func (l *liveness) confirm(now time.Time) {
	l.mu.Lock()
	l.subscribed = true
	l.lastSign = now
	l.mu.Unlock()
}

func (l *liveness) isSubscribed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.subscribed
}

func (l *liveness) silentFor(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return now.Sub(l.lastSign)
}

// registered records a heartbeat sent at sent that succeeded; added tells
// that the registry did not hold the instance. After a lapse (or the first
// time), only PINGs from nextPing on prove liveness: those are answered
// after every invalidation published before the registration.
func (l *liveness) registered(sent time.Time, added bool, nextPing uint64, hold time.Duration) {
	l.mu.Lock()
	if r := l.regUntil.Load(); added || r == nil || !sent.Before(*r) {
		l.proof.Store(nil)
		l.epoch = nextPing
	}
	until := sent.Add(hold)
	l.regUntil.Store(&until)
	l.mu.Unlock()
}

// pinging records that the PING numbered seq is sent at sent.
func (l *liveness) pinging(seq uint64, sent time.Time) {
	l.mu.Lock()
	if len(l.pings) == maxPendingPings {
		l.pings = append(l.pings[:0], l.pings[1:]...)
	}
	l.pings = append(l.pings, sentPing{seq, sent})
	l.mu.Unlock()
}

// pong records the answer to the PING numbered seq.
func (l *liveness) pong(seq uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastSign = now
	i := 0
	for i < len(l.pings) && l.pings[i].seq < seq {
		i++
	}
	if i == len(l.pings) || l.pings[i].seq != seq {
		l.pings = append(l.pings[:0], l.pings[i:]...)
		return
	}
	sent := l.pings[i].sent
	l.pings = append(l.pings[:0], l.pings[i+1:]...)
	if p := l.proof.Load(); l.subscribed && seq >= l.epoch && (p == nil || sent.After(*p)) {
		l.proof.Store(&sent)
	}
}

func (l *liveness) sign(now time.Time) {
	l.mu.Lock()
	l.lastSign = now
	l.mu.Unlock()
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
		wasLive := v.live.isLive()
		v.live.reset(v.store.now())
		v.cache.flush()
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
	if err != nil {
		v.store.metrics.errors.WithLabelValues(opSubscribe).Inc()
	}
	return err
}

// receive handles what arrives on the subscription, in order.
func (v *Verifier) receive(sub *subscription) error {
	for {
		msg, err := sub.ps.Receive(v.bg)
		if err != nil {
			return err
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
			v.cache.flush()
			v.live.confirm(now)
			v.sessions.Add(1)
			select {
			case sub.kick <- struct{}{}:
			default:
			}
		case *redis.Message:
			v.live.sign(now)
			v.invalidated(m.Payload)
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
	var seq uint64
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
		seq++
		if v.live.isSubscribed() {
			v.heartbeat(now, seq)
		}
		v.live.pinging(seq, v.store.now())
		ctx, cancel := context.WithTimeout(v.bg, v.opts.SubscriptionStale)
		err := sub.ps.Ping(ctx, strconv.FormatUint(seq, 10))
		cancel()
		if err != nil {
			sub.ps.Close()
			return
		}
	}
}

// heartbeat registers the verifier for SubscriptionStale more, by the
// server's clock. Locally it counts on three quarters of that, from before
// the call.
func (v *Verifier) heartbeat(sent time.Time, nextPing uint64) {
	ctx, cancel := context.WithTimeout(v.bg, v.opts.SubscriptionStale)
	defer cancel()
	ttl := v.opts.SubscriptionStale
	added, err := heartbeatScript.Run(ctx, v.store.rdb, []string{v.store.names.verifiers()}, v.id, ttl.Milliseconds()).Int()
	if err != nil {
		v.store.metrics.errors.WithLabelValues(opHeartbeat).Inc()
		v.log.Debug("registering the verifier", "instance", v.id, "err", err)
		return
	}
	v.live.registered(sent, added == 1, nextPing, ttl*3/4)
}

// deregister removes the verifier from the registry, so that revokers stop
// waiting for it. When it cannot, the registration lapses on its own.
func (v *Verifier) deregister() {
	ctx, cancel := context.WithTimeout(v.bg, deregisterTimeout)
	defer cancel()
	if err := v.store.rdb.ZRem(ctx, v.store.names.verifiers(), v.id).Err(); err != nil {
		v.log.Debug("deregistering the verifier", "instance", v.id, "err", err)
	}
}

// invalidated handles an invalidation: drop, then acknowledge.
func (v *Verifier) invalidated(payload string) {
	id, nonce, ok := strings.Cut(payload, " ")
	if !ok || !ValidID(id) || nonce == "" {
		v.log.Debug("ignoring a malformed invalidation", "instance", v.id)
		return
	}
	kid := parseKeyID(id[len(idPrefix):])
	v.cache.invalidate(&kid)
	v.metrics.invalidations.Inc()
	select {
	case v.acks <- nonce:
	case <-v.stop:
	}
}

// acknowledge pushes acknowledgements, as many as are waiting in one
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
		ctx, cancel := context.WithTimeout(v.bg, publishTimeout)
		_, err := v.store.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, nonce := range batch {
				key := v.store.names.ack(nonce)
				p.RPush(ctx, key, v.id)
				p.PExpire(ctx, key, ackTTL)
			}
			return nil
		})
		cancel()
		if err != nil {
			v.store.metrics.errors.WithLabelValues(opAck).Inc()
			v.log.Warn("acknowledging cache invalidations", "instance", v.id, "err", err)
		}
	}
}

// newInstanceID names a verifier in the registry and in revokers' logs:
// host, process and a random part.
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
