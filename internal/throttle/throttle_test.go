package throttle

import (
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testclock"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestBurstThenRefill(t *testing.T) {
	c := testclock.New()
	l := New(Config{FailuresPerMinute: 6, Burst: 3, Now: c.Now}) // one token every 10 s
	ip := addr("192.0.2.1")
	for i := range 3 {
		if ok, _ := l.Fail(ip); !ok {
			t.Fatalf("failure %d of a burst of 3 was throttled", i+1)
		}
	}
	ok, wait := l.Fail(ip)
	if ok || wait != 10*time.Second {
		t.Fatalf("4th failure: ok=%v wait=%v, want throttled for 10s", ok, wait)
	}
	c.Advance(4 * time.Second)
	if ok, wait := l.Fail(ip); ok || wait != 6*time.Second {
		t.Fatalf("after 4s: ok=%v wait=%v, want throttled for 6s (throttled failures take nothing)", ok, wait)
	}
	c.Advance(6 * time.Second)
	if ok, _ := l.Fail(ip); !ok {
		t.Fatal("a token refilled after 10s, yet the failure was throttled")
	}
	if ok, _ := l.Fail(ip); ok {
		t.Fatal("the refilled token was spent, yet the next failure passed")
	}
	c.Advance(time.Hour)
	for i := range 3 {
		if ok, _ := l.Fail(ip); !ok {
			t.Fatalf("after an hour, failure %d was throttled: the bucket must refill to the burst", i+1)
		}
	}
	if ok, _ := l.Fail(ip); ok {
		t.Fatal("the bucket refilled past its burst")
	}
}

func TestClientsAreIndependent(t *testing.T) {
	c := testclock.New()
	l := New(Config{FailuresPerMinute: 1, Burst: 1, Now: c.Now})
	if ok, _ := l.Fail(addr("192.0.2.1")); !ok {
		t.Fatal("first failure throttled")
	}
	if ok, _ := l.Fail(addr("192.0.2.1")); ok {
		t.Fatal("second failure of the same client passed")
	}
	for _, other := range []string{"192.0.2.2", "2001:db8::1", "2001:db8:0:1::1"} {
		if ok, _ := l.Fail(addr(other)); !ok {
			t.Fatalf("%s was throttled for 192.0.2.1's failures", other)
		}
	}
	// The same /64, and an IPv4-mapped form of a throttled IPv4 address,
	// share a budget.
	for _, same := range []string{"2001:db8::ffff", "::ffff:192.0.2.1", "2001:db8:0:1:ab::1"} {
		if ok, _ := l.Fail(addr(same)); ok {
			t.Fatalf("%s has a budget of its own; it shares one with an address already throttled", same)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		wait time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {time.Second + 1, 2}, {59500 * time.Millisecond, 60}} {
		if got := RetryAfter(tc.wait); got != tc.want {
			t.Errorf("RetryAfter(%v) = %d, want %d", tc.wait, got, tc.want)
		}
	}
}

func TestDisabled(t *testing.T) {
	for _, rate := range []float64{0, -1} {
		l := New(Config{FailuresPerMinute: rate})
		if l != nil {
			t.Fatalf("New with %v failures per minute is not nil", rate)
		}
		for range 100 {
			if ok, _ := l.Fail(addr("192.0.2.1")); !ok {
				t.Fatal("a nil limiter throttled")
			}
		}
	}
}

func TestDefaultBurst(t *testing.T) {
	l := New(Config{FailuresPerMinute: 5, Now: testclock.New().Now})
	n := 0
	for {
		if ok, _ := l.Fail(addr("192.0.2.1")); !ok {
			break
		}
		if n++; n > 100 {
			t.Fatal("never throttled")
		}
	}
	if n != 5 {
		t.Fatalf("default burst is %d, want one minute's worth (5)", n)
	}
}

func TestMemoryIsBounded(t *testing.T) {
	c := testclock.New()
	l := New(Config{FailuresPerMinute: 60, Burst: 2, MaxClients: 100, Now: c.Now})
	for i := range 10_000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.Fail(ip)
		if n := l.Len(); n > 100 {
			t.Fatalf("after %d clients the limiter tracks %d, cap 100", i+1, n)
		}
	}
	if l.Len() != 100 {
		t.Fatalf("tracks %d clients, want the cap (100): nothing had expired", l.Len())
	}
}

func TestEntriesExpire(t *testing.T) {
	c := testclock.New()
	l := New(Config{FailuresPerMinute: 60, Burst: 5, MaxClients: 50, Now: c.Now})
	old := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}) }
	fresh := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}) }
	for i := range 50 {
		l.Fail(old(i))
	}
	// One failure took one token; it is back after one second, and the
	// 50 entries are as good as gone: 50 new clients, each throttled, fit
	// without evicting one another.
	c.Advance(time.Second)
	for i := range 50 {
		for range 5 {
			if ok, _ := l.Fail(fresh(i)); !ok {
				t.Fatalf("client %d throttled within its burst", i)
			}
		}
	}
	if n := l.Len(); n != 50 {
		t.Fatalf("tracks %d clients, want the 50 new ones", n)
	}
	for i := range 50 {
		if ok, _ := l.Fail(fresh(i)); ok {
			t.Fatalf("client %d was forgotten: expired entries must give way before live ones", i)
		}
	}

	// When nothing has expired, a new client evicts one arbitrary entry.
	l.Fail(addr("192.0.2.2"))
	if n := l.Len(); n != 50 {
		t.Fatalf("tracks %d, want 50 (full, one evicted, one added)", n)
	}
	kept := 0
	for i := range 50 {
		if _, ok := l.clients[fresh(i)]; ok {
			kept++
		}
	}
	if _, ok := l.clients[addr("192.0.2.2")]; !ok || kept != 49 {
		t.Fatalf("kept %d of 50 throttled clients and the new one: %v; want 49 and true", kept, ok)
	}
}

func TestClockBackwards(t *testing.T) {
	c := testclock.New()
	now := c.Now()
	l := New(Config{FailuresPerMinute: 60, Burst: 1, Now: func() time.Time { return now }})
	l.Fail(addr("192.0.2.1"))
	now = now.Add(-time.Hour)
	if ok, _ := l.Fail(addr("192.0.2.1")); ok {
		t.Fatal("a clock that stepped back refilled the budget")
	}
}

func TestConcurrentUse(t *testing.T) {
	l := New(Config{FailuresPerMinute: 60, Burst: 10, MaxClients: 64})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				l.Fail(netip.AddrFrom4([4]byte{10, byte(g), byte(i >> 8), byte(i)}))
			}
		}()
	}
	wg.Wait()
	if n := l.Len(); n > 64 {
		t.Fatalf("tracks %d clients, cap 64", n)
	}
}

func TestParseProxies(t *testing.T) {
	p, err := ParseProxies(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,, ::ffff:172.16.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"10.1.2.3": true, "192.168.1.7": true, "192.168.1.8": false, "fd12::1": true,
		"172.16.0.1": true, "::ffff:10.0.0.1": true, "11.0.0.1": false, "2001:db8::1": false,
	} {
		if got := p.Contains(addr(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
	if p, err := ParseProxies(""); err != nil || len(p) != 0 {
		t.Fatalf(`ParseProxies("") = %v, %v; want none`, p, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "localhost", "10.0.0.1/8/8", "1.2.3"} {
		if _, err := ParseProxies(bad); err == nil {
			t.Errorf("ParseProxies(%q) accepted", bad)
		}
	}
}

func TestClientIP(t *testing.T) {
	trusted, _ := ParseProxies("10.0.0.0/8, 2001:db8:ffff::/48")
	for _, tc := range []struct {
		name    string
		proxies Proxies
		remote  string
		xff     []string
		want    string
	}{
		{"no proxies: the peer", nil, "192.0.2.1:5000", []string{"6.6.6.6"}, "192.0.2.1"},
		{"untrusted peer: its claim is ignored", trusted, "192.0.2.1:5000", []string{"6.6.6.6"}, "192.0.2.1"},
		{"trusted peer without the header", trusted, "10.0.0.5:5000", nil, "10.0.0.5"},
		{"one trusted hop", trusted, "10.0.0.5:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"client's own claim stays left", trusted, "10.0.0.5:5000", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"two trusted hops", trusted, "10.0.0.5:5000", []string{"6.6.6.6, 198.51.100.7, 10.9.9.9"}, "198.51.100.7"},
		{"several header lines", trusted, "10.0.0.5:5000", []string{"6.6.6.6", "198.51.100.7", "10.9.9.9"}, "198.51.100.7"},
		{"every hop trusted: the leftmost", trusted, "10.0.0.5:5000", []string{"10.1.1.1, 10.2.2.2"}, "10.1.1.1"},
		{"garbage stops the walk", trusted, "10.0.0.5:5000", []string{"198.51.100.7, not-an-ip"}, "10.0.0.5"},
		{"garbage left of the client is never read", trusted, "10.0.0.5:5000", []string{"<script>, 198.51.100.7"}, "198.51.100.7"},
		{"ports and brackets", trusted, "10.0.0.5:5000", []string{"[2001:db8::7]:443, 10.3.3.3:80"}, "2001:db8::7"},
		{"empty entries", trusted, "10.0.0.5:5000", []string{" , 198.51.100.7 ,, "}, "198.51.100.7"},
		{"IPv6 peer", trusted, "[2001:db8:ffff::1]:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"mapped peer", trusted, "[::ffff:10.0.0.5]:5000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"no address at all", trusted, "@", []string{"198.51.100.7"}, "invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tc.proxies.ClientIP(r).String(); got != tc.want {
				t.Fatalf("ClientIP = %s, want %s", got, tc.want)
			}
		})
	}
}

func FuzzClientIP(f *testing.F) {
	f.Add("10.0.0.5:5000", "6.6.6.6, 198.51.100.7, 10.9.9.9")
	f.Add("192.0.2.1:1", "1.1.1.1")
	f.Add("[::1]:80", "[2001:db8::7]:443,,")
	f.Add("@", "")
	trusted, _ := ParseProxies("10.0.0.0/8, ::1/128")
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		got := trusted.ClientIP(r)
		peer := parseHop(remote)
		if !trusted.Contains(peer) && got != peer {
			t.Fatalf("an untrusted peer %v was replaced by %v from X-Forwarded-For", peer, got)
		}
		if got.IsValid() && got != peer {
			// Whatever came from the header must have been in it.
			found := false
			for _, hop := range splitHops(xff) {
				if parseHop(hop) == got {
					found = true
				}
			}
			if !found {
				t.Fatalf("ClientIP = %v, neither the peer nor in %q", got, xff)
			}
		}
		l := New(Config{FailuresPerMinute: 1, Burst: 1})
		l.Fail(got) // never panics, whatever the address
	})
}

func splitHops(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != ',' {
			i++
		}
		out = append(out, s[:i])
		if i == len(s) {
			break
		}
		s = s[i+1:]
	}
	return out
}
