// Package throttle limits failed verifications per client IP address: a
// token bucket per client, in a table of bounded size whose entries expire,
// and the client's address as trusted proxies report it.
//
//	l := throttle.New(throttle.Config{FailuresPerMinute: 60, Burst: 20})
//	proxies, err := throttle.ParseProxies("10.0.0.0/8, 192.168.1.7")
//	…
//	// after a failed verification:
//	if ok, wait := l.Fail(proxies.ClientIP(r)); !ok {
//		// 429, Retry-After: throttle.RetryAfter(wait)
//	}
//
// Only failures are counted: a caller never asks the limiter about a
// request that succeeded, so a valid key is never throttled, whoever else
// shares its address.
package throttle

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/apierror"
)

// DefaultMaxClients is the default bound on the client addresses a
// [Limiter] tracks: a few MiB of memory at most.
const DefaultMaxClients = 65536

// sweepEvery is how often, at most, a full table is swept for expired
// entries before an arbitrary one is evicted.
const sweepEvery = time.Second

// Config configures a [Limiter].
type Config struct {
	// FailuresPerMinute is how fast a client's budget refills. Zero or
	// negative disables throttling: [New] returns nil.
	FailuresPerMinute float64
	// Burst is how many failures a client may make in a row before it is
	// throttled: the size of its bucket. Default: one minute's worth
	// (FailuresPerMinute, at least 1).
	Burst int
	// MaxClients bounds the number of client addresses tracked. When the
	// table is full, expired entries are dropped, and if none has expired
	// an arbitrary entry is evicted. Default [DefaultMaxClients].
	MaxClients int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Limiter counts failures per client address. A nil *Limiter throttles
// nothing. Its methods are safe for concurrent use.
//
// Each client's bucket is kept as one instant (the generic cell rate
// algorithm): tat, when the bucket will be full again. A failure moves tat
// one interval on; a failure that would move it more than a burst's worth
// of intervals past now is throttled. Arithmetic is on whole nanoseconds.
type Limiter struct {
	interval time.Duration // one failure's worth of refill
	capacity time.Duration // Burst intervals
	max      int
	now      func() time.Time

	mu        sync.Mutex
	clients   map[netip.Addr]time.Time // client → tat
	lastSweep time.Time
}

// New returns a limiter, or nil when cfg.FailuresPerMinute is not
// positive.
func New(cfg Config) *Limiter {
	if !(cfg.FailuresPerMinute > 0) || math.IsInf(cfg.FailuresPerMinute, 0) {
		return nil
	}
	burst := cfg.Burst
	if burst <= 0 {
		burst = max(1, int(cfg.FailuresPerMinute))
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	interval := max(time.Duration(float64(time.Minute)/cfg.FailuresPerMinute), 1)
	return &Limiter{
		interval: interval,
		capacity: interval * time.Duration(burst),
		max:      cfg.MaxClients,
		now:      cfg.Now,
		clients:  make(map[netip.Addr]time.Time),
	}
}

// Fail records a failed verification by client and reports whether it was
// within the client's budget. When it was not, wait is how long until the
// client's next failure would be: a throttled failure takes nothing from
// the budget, so a client that keeps failing gets one answer per refill.
func (l *Limiter) Fail(client netip.Addr) (ok bool, wait time.Duration) {
	if l == nil {
		return true, 0
	}
	key := Key(client)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, found := l.clients[key]
	if !found {
		l.makeRoom(now)
	}
	if tat.Before(now) {
		tat = now
	}
	next := tat.Add(l.interval)
	if over := next.Sub(now) - l.capacity; over > 0 {
		l.clients[key] = tat
		return false, over
	}
	l.clients[key] = next
	return true, 0
}

// Len is the number of client addresses tracked.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// makeRoom is called, under mu, before a new client is added. It drops two
// entries at random if their buckets are full again (forgetting them
// changes nothing), so that the table drains while it is used. When the
// table is full it sweeps every such entry (at most every sweepEvery), and
// if that freed nothing, evicts an arbitrary entry.
func (l *Limiter) makeRoom(now time.Time) {
	n := 0
	for k, tat := range l.clients { // map iteration starts at a random entry
		if !tat.After(now) {
			delete(l.clients, k)
		}
		if n++; n == 2 {
			break
		}
	}
	if len(l.clients) < l.max {
		return
	}
	if now.Sub(l.lastSweep) >= sweepEvery || now.Before(l.lastSweep) {
		l.lastSweep = now
		for k, tat := range l.clients {
			if !tat.After(now) {
				delete(l.clients, k)
			}
		}
	}
	for k := range l.clients {
		if len(l.clients) < l.max {
			break
		}
		delete(l.clients, k)
	}
}

// Key is the address a client is counted under: IPv4 addresses (mapped
// ones included) as they are, IPv6 addresses by their /64 prefix, since
// one host commonly holds a whole /64. Zones are dropped.
func Key(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// TooManyRequests is the answer to a client over its budget: 429
// too_many_requests, with Retry-After for wait. what names what failed
// ("failed verifications", "failed authentications").
func TooManyRequests(wait time.Duration, what string) *apierror.Error {
	retry := RetryAfter(wait)
	return &apierror.Error{
		Status: http.StatusTooManyRequests, Code: "too_many_requests", Message: "too many requests",
		LongMessage: "too many " + what + " from this address; retry after " + strconv.Itoa(retry) + "s",
		RetryAfter:  retry,
	}
}

// RetryAfter returns the value of a Retry-After header for wait: whole
// seconds, rounded up, at least 1.
func RetryAfter(wait time.Duration) int {
	s := int(math.Ceil(wait.Seconds()))
	return max(s, 1)
}
