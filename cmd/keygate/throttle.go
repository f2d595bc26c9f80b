package main

import (
	"net/netip"

	"github.com/keygate/keygate/internal/throttle"
	"github.com/keygate/keygate/sidecar"
)

// Defaults of the throttling of failed verifications per client IP.
const (
	defaultThrottlePerMinute = 60
	defaultThrottleBurst     = 20
)

// throttleConfig are the flags of serve (forward-auth) and sidecar that
// throttle failed verifications per client IP.
type throttleConfig struct {
	perMinute      float64
	burst          int
	trustedProxies string
}

func (c *throttleConfig) register(fs *flagSet, forwardAuth bool) {
	what := "failed verifications a client IP may make per minute before the sidecar answers 429"
	if forwardAuth {
		what = "failed admin tokens, and failed verifications on forward-auth (there only with --trusted-proxies: every request comes from the proxy), a client IP may make per minute before keygate answers 429"
	}
	fs.Float64Var(&c.perMinute, "throttle-failures-per-minute", defaultThrottlePerMinute, what+"; 0 turns throttling off")
	fs.IntVar(&c.burst, "throttle-burst", defaultThrottleBurst, "failures a client IP may make in a row")
	fs.StringVar(&c.trustedProxies, "trusted-proxies", "",
		"comma-separated CIDRs or IPs of proxies whose X-Forwarded-For names the client (default: none, the direct peer is the client)")
}

// options checks the flags and returns the throttling options.
func (c *throttleConfig) options() (sidecar.ThrottleOptions, error) {
	switch {
	case c.perMinute < 0 || c.perMinute != c.perMinute || c.perMinute > 1e9:
		return sidecar.ThrottleOptions{}, usagef("--throttle-failures-per-minute must be between 0 (off) and 1e9")
	case c.burst < 1:
		return sidecar.ThrottleOptions{}, usagef("--throttle-burst must be at least 1")
	}
	proxies, err := throttle.ParseProxies(c.trustedProxies)
	if err != nil {
		return sidecar.ThrottleOptions{}, usagef("--trusted-proxies: %v", err)
	}
	return sidecar.ThrottleOptions{
		FailuresPerMinute: c.perMinute,
		Burst:             c.burst,
		TrustedProxies:    []netip.Prefix(proxies),
	}, nil
}
