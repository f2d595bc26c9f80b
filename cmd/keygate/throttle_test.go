package main

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestBadThrottleConfiguration(t *testing.T) {
	side := []string{"sidecar", "--upstream", "http://127.0.0.1:1", "--redis-url", "redis://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want string
	}{
		{"negative rate", append(side, "--throttle-failures-per-minute=-1"), env(), "--throttle-failures-per-minute"},
		{"zero burst", append(side, "--throttle-burst", "0"), env(), "--throttle-burst"},
		{"bad proxies flag", append(side, "--trusted-proxies", "10.0.0.0/8,nope"), env(), "--trusted-proxies"},
		{"bad proxies env", []string{"serve", "--data-dir", "@tmp"}, env("KEYGATE_TRUSTED_PROXIES", "10.0.0.0/40"), "--trusted-proxies"},
		{"bad rate env", side, env("KEYGATE_THROTTLE_FAILURES_PER_MINUTE", "lots"), "KEYGATE_THROTTLE_FAILURES_PER_MINUTE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, a := range tc.args {
				if a == "@tmp" {
					tc.args[i] = t.TempDir()
				}
			}
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &stdout, &stderr, tc.env)
			if code != exitUsage {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q: want one line naming %s", stderr.String(), tc.want)
			}
		})
	}
}

func TestThrottleOptions(t *testing.T) {
	fs := newFlagSet("keygate sidecar", "", &bytes.Buffer{})
	var c throttleConfig
	c.register(fs, false)
	if err := fs.parse(nil, env("KEYGATE_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7", "KEYGATE_THROTTLE_BURST", "5")); err != nil {
		t.Fatal(err)
	}
	o, err := c.options()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
	if o.FailuresPerMinute != defaultThrottlePerMinute || o.Burst != 5 || !slices.Equal(o.TrustedProxies, want) {
		t.Fatalf("options = %+v", o)
	}
}
