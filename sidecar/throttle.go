package sidecar

import (
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/keystore"
)

// ThrottleOptions configure the throttling of failed verifications per
// client IP address, for [ProxyOptions] and [ForwardAuthOptions]. The zero
// value throttles nothing.
//
// A client whose failures (a malformed, unknown, revoked, disabled or expired key)
// exceed its budget gets 429 too_many_requests with Retry-After instead of
// 401, until the budget refills. A request that verifies is never
// throttled, whoever shares its address; a request without a key, a
// missing scope (403) and an unreachable store (503) count for nothing.
// Throttled or not, every request is verified: the 429 only hides the
// outcome from a client that keeps guessing and tells it to back off.
type ThrottleOptions struct {
	// FailuresPerMinute is how fast a client's budget refills. Zero
	// disables throttling.
	FailuresPerMinute float64
	// Burst is how many failures a client may make in a row. Default:
	// FailuresPerMinute.
	Burst int
	// TrustedProxies are the direct peers whose X-Forwarded-For names the
	// client (see [throttle.Proxies.ClientIP]); from any other peer the
	// header is ignored. Forward-auth throttles only when this is set:
	// every request there comes from the proxy.
	TrustedProxies []netip.Prefix
	// MaxClients bounds the number of client addresses tracked (IPv6 by
	// /64). Default 65,536.
	MaxClients int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// throttler answers 429 to clients over their failure budget. A nil
// *throttler throttles nothing.
type throttler struct {
	limiter *throttle.Limiter
	proxies throttle.Proxies
	log     *slog.Logger
}

func newThrottler(o ThrottleOptions, log *slog.Logger) *throttler {
	l := throttle.New(throttle.Config{
		FailuresPerMinute: o.FailuresPerMinute,
		Burst:             o.Burst,
		MaxClients:        o.MaxClients,
		Now:               o.Now,
	})
	if l == nil {
		return nil
	}
	return &throttler{limiter: l, proxies: throttle.Proxies(o.TrustedProxies), log: log}
}

// deny counts a refused verification (err, as the verifier returned it)
// against the client's budget. When the budget is spent it answers 429
// and reports true; the caller must then write nothing more.
func (t *throttler) deny(w http.ResponseWriter, r *http.Request, err error) bool {
	if t == nil {
		return false
	}
	switch keystore.Outcome(err) {
	case "malformed", "not_found", "revoked", "disabled", "expired":
	default:
		return false
	}
	client := t.proxies.ClientIP(r)
	ok, wait := t.limiter.Fail(client)
	if ok {
		return false
	}
	e := throttle.TooManyRequests(wait, "failed verifications")
	t.log.DebugContext(r.Context(), "throttled a client over its budget of failed verifications",
		"client", client.String(), "retry_after", e.RetryAfter)
	apierror.Write(w, apierror.RequestID(r), e)
	return true
}

// closeUnread makes the server close the connection after a refusal that
// leaves the request body unread, without reading any more of it. Left to
// itself, net/http reads up to 256 KiB of an unread body before it answers
// and again before it lets the connection go, so a client that trickles a
// body it was never asked for would hold a goroutine for as long as it
// likes (the proxy listener has no ReadTimeout, so that uploads stream).
func closeUnread(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 {
		return
	}
	w.Header().Set("Connection", "close")
	// Fails harmlessly where unsupported (a ResponseRecorder).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}
