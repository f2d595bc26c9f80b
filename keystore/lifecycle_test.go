package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
)

func checkFrom(t testing.TB, v *Verifier, secret, addr string) (Result, error) {
	t.Helper()
	req := Request{Secret: secret, Source: SourceAPI}
	if addr != "" {
		req.ClientIP = netip.MustParseAddr(addr)
	}
	return v.Check(context.Background(), req)
}

// TestRoll: the new key copies every setting of the old one and moves its
// credits; both verify during the grace, the old one spending from the new
// one's balance; the old one is refused once the grace is over, on the
// injected clock; a grace of 0 revokes it at once.
func TestRoll(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		v := newVerifier(t, e, VerifierOptions{})
		p := CreateParams{
			Name: "prod", Subject: "org_1", Description: ptr("billing export"),
			Claims: json.RawMessage(`{"tier":"gold"}`), Scopes: []string{"read", "write"},
			RateLimits:             []RateLimit{{Name: "default", Limit: 100, DurationMs: 60_000}},
			Credits:                &Credits{Remaining: 10, Refill: &Refill{Interval: "month", Amount: 10, DayOfMonth: 1}},
			AllowedCIDRs:           []string{"10.0.0.0/8", "2001:db8::/32"},
			SecondsUntilExpiration: ptr[int64](30 * 24 * 3600),
		}
		old := mustCreate(t, e.store, p)
		for range 3 {
			if _, err := checkFrom(t, v, old.Secret, "10.1.2.3"); err != nil {
				t.Fatal(err)
			}
		}
		k, err := e.store.Roll(ctx, old.ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if k.Secret == "" || k.ID == old.ID || k.RolledFrom == nil || *k.RolledFrom != old.ID {
			t.Fatalf("rolled key %+v: want a new ID, a secret and rolled_from %s", k, old.ID)
		}
		got, err := e.store.Get(ctx, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		same := func(what string, a, b any) {
			t.Helper()
			if toJSON(a) != toJSON(b) {
				t.Errorf("%s: new %s, old %s", what, toJSON(a), toJSON(b))
			}
		}
		same("name", got.Name, old.Name)
		same("subject", got.Subject, old.Subject)
		same("description", got.Description, old.Description)
		same("claims", got.Claims, old.Claims)
		same("scopes", got.Scopes, old.Scopes)
		same("rate limits", got.RateLimits, old.RateLimits)
		same("allowed CIDRs", got.AllowedCIDRs, old.AllowedCIDRs)
		same("expiration", got.Expiration, old.Expiration)
		same("refill", got.Credits.Refill, old.Credits.Refill)
		if got.Credits.Remaining != 7 || k.Credits.Remaining != 7 {
			t.Errorf("new key's credits %d (returned %d), want the 7 left", got.Credits.Remaining, k.Credits.Remaining)
		}
		prev, _ := e.store.Get(ctx, old.ID)
		if prev.RolledTo == nil || *prev.RolledTo != k.ID || prev.Credits.Remaining != 0 {
			t.Errorf("old key after the roll: rolled_to %v, credits %d; want %s and 0", prev.RolledTo, prev.Credits.Remaining, k.ID)
		}
		if want := e.clock.Now().Add(time.Hour).UnixMilli(); prev.Expiration == nil || *prev.Expiration != want {
			t.Errorf("old key's expiration %v, want now + grace %d", prev.Expiration, want)
		}

		// Both verify during the grace, as themselves, from one balance.
		for _, tc := range []struct{ secret, id string }{{old.Secret, old.ID}, {k.Secret, k.ID}, {old.Secret, old.ID}} {
			res, err := checkFrom(t, v, tc.secret, "10.9.9.9")
			if err != nil || res.Key.ID != tc.id {
				t.Fatalf("during the grace: %v, %v; want %s admitted", res.Key, err, tc.id)
			}
		}
		if got, _ := e.store.Get(ctx, k.ID); got.Credits.Remaining != 4 {
			t.Errorf("after 3 uses of both keys the new key has %d credits, want 4", got.Credits.Remaining)
		}
		if _, err := checkFrom(t, v, old.Secret, "192.0.2.1"); !errors.Is(err, ErrIPNotAllowed) {
			t.Errorf("old key from outside its CIDRs = %v, want ErrIPNotAllowed", err)
		}

		e.clock.Advance(time.Hour)
		if _, err := checkFrom(t, v, old.Secret, "10.0.0.1"); !errors.Is(err, ErrExpired) {
			t.Fatalf("old key after the grace = %v, want ErrExpired", err)
		}
		if _, err := checkFrom(t, v, k.Secret, "10.0.0.1"); err != nil {
			t.Fatalf("new key after the grace = %v", err)
		}

		// Rolled already, revoked: refused. Grace 0: the old key is revoked.
		if _, err := e.store.Roll(ctx, old.ID, time.Hour); !isValidation(err) {
			t.Errorf("rolling a rolled key = %v, want a ValidationError", err)
		}
		k2, err := e.store.Roll(ctx, k.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := checkFrom(t, v, k.Secret, "10.0.0.1"); !errors.Is(err, ErrRevoked) {
			t.Errorf("key rolled with grace 0 = %v, want ErrRevoked", err)
		}
		if res, err := checkFrom(t, v, k2.Secret, "10.0.0.1"); err != nil || *res.Limits.Credits != 2 {
			t.Errorf("key rolled twice: %v, credits %v; want admitted with 2 left", err, *res.Limits.Credits)
		}
		if _, err := e.store.Roll(ctx, k.ID, time.Hour); !isValidation(err) {
			t.Errorf("rolling a revoked key = %v, want a ValidationError", err)
		}
		if _, err := e.store.Roll(ctx, k2.ID, -time.Second); !isValidation(err) {
			t.Errorf("a negative grace = %v, want a ValidationError", err)
		}
		if _, err := e.store.Roll(ctx, "ak_"+hex.EncodeToString(make([]byte, 16)), time.Hour); !errors.Is(err, ErrNotFound) {
			t.Errorf("rolling an unknown key = %v, want ErrNotFound", err)
		}
		// A short-lived key keeps its own, earlier, expiration.
		short := mustCreate(t, e.store, CreateParams{Name: "s", Subject: "org_1", SecondsUntilExpiration: ptr[int64](60)})
		if _, err := e.store.Roll(ctx, short.ID, time.Hour); err != nil {
			t.Fatal(err)
		}
		if got, _ := e.store.Get(ctx, short.ID); *got.Expiration != *short.Expiration {
			t.Errorf("rolled short-lived key expires at %d, want its own %d", *got.Expiration, *short.Expiration)
		}
	})
}

func isValidation(err error) bool {
	var ve *ValidationError
	return errors.As(err, &ve)
}

// TestDisable: a disabled key is refused as disabled (counted so in the
// usage history), a renamed one keeps verifying, an enabled one verifies
// again.
func TestDisable(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		v := newVerifier(t, e, VerifierOptions{})
		k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s"})
		if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
			t.Fatal(err)
		}
		got, err := e.store.Update(ctx, k.ID, UpdateParams{Enabled: ptr(false), Name: ptr("renamed")})
		if err != nil || got.Enabled || got.Name != "renamed" {
			t.Fatalf("Update = %+v, %v; want disabled and renamed", got, err)
		}
		_, err = v.Verify(ctx, k.Secret, SourceAPI)
		if !errors.Is(err, ErrDisabled) || Outcome(err) != "disabled" {
			t.Fatalf("disabled key = %v (%s), want ErrDisabled", err, Outcome(err))
		}
		if _, err := e.store.Verify(ctx, k.Secret); !errors.Is(err, ErrDisabled) {
			t.Fatalf("Store.Verify of a disabled key = %v", err)
		}
		if _, err := e.store.Update(ctx, k.ID, UpdateParams{Enabled: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if got, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil || got.Name != "renamed" {
			t.Fatalf("enabled again = %v, %v", got, err)
		}
		if err := e.store.FlushUsage(ctx); err != nil {
			t.Fatal(err)
		}
		u, err := e.store.Usage(ctx, k.ID, "day", e.clock.Now().Add(-time.Hour), e.clock.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var valid, disabled int64
		for _, p := range u.Data {
			valid += p.Counts[histValid]
			disabled += p.Counts[histDisabled]
		}
		if valid != 2 || disabled != 1 {
			t.Errorf("history: %d valid, %d disabled; want 2 and 1", valid, disabled)
		}
		if _, err := e.store.Update(ctx, k.ID, UpdateParams{Name: ptr("")}); !isValidation(err) {
			t.Errorf("an empty name = %v, want a ValidationError", err)
		}
	})
}

// TestAllowedCIDRs: a key with allowed CIDRs admits its addresses, IPv4
// and IPv6 (and IPv4-mapped IPv6), and refuses others and unknown ones,
// after the state checks and before the scopes.
func TestAllowedCIDRs(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	v := newVerifier(t, e, VerifierOptions{})
	ctx := context.Background()
	k := mustCreate(t, e.store, CreateParams{Name: "n", Subject: "s", Scopes: []string{"read"},
		AllowedCIDRs: []string{"203.0.113.0/24", "2001:db8::/32", "198.51.100.7"}})
	if want := []string{"203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"}; !slices.Equal(k.AllowedCIDRs, want) {
		t.Fatalf("allowed CIDRs %v, want %v", k.AllowedCIDRs, want)
	}
	for _, tc := range []struct {
		addr   string
		scopes []string
		want   error
	}{
		{"203.0.113.9", nil, nil},
		{"::ffff:203.0.113.9", nil, nil},
		{"2001:db8::1", nil, nil},
		{"198.51.100.7", nil, nil},
		{"198.51.100.8", nil, ErrIPNotAllowed},
		{"2001:db9::1", nil, ErrIPNotAllowed},
		{"", nil, ErrIPNotAllowed},
		{"192.0.2.1", []string{"admin"}, ErrIPNotAllowed}, // the address before the scopes
		{"203.0.113.9", []string{"admin"}, ErrInsufficientScope},
	} {
		req := Request{Secret: k.Secret, Source: SourceMiddleware, Scopes: tc.scopes}
		if tc.addr != "" {
			req.ClientIP = netip.MustParseAddr(tc.addr)
		}
		if _, err := v.Check(ctx, req); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("from %q with scopes %v: %v, want %v", tc.addr, tc.scopes, err, tc.want)
		}
	}
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); !errors.Is(err, ErrIPNotAllowed) || Outcome(err) != "ip_not_allowed" {
		t.Errorf("Verify, which knows no address = %v", err)
	}
	// Revoked comes first: a revoked key is told revoked from anywhere.
	if _, err := e.store.Update(ctx, k.ID, UpdateParams{AllowedCIDRs: &[]string{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, k.Secret, SourceAPI); err != nil {
		t.Errorf("with the CIDRs removed = %v", err)
	}
	for _, bad := range [][]string{{"10.0.0.0/33"}, {"nope"}, {"fe80::1%eth0"}, make([]string, MaxAllowedCIDRs+1)} {
		if _, err := e.store.Create(ctx, CreateParams{Name: "n", Subject: "s", AllowedCIDRs: bad}); !isValidation(err) {
			t.Errorf("allowed_cidrs %q = %v, want a ValidationError", bad, err)
		}
	}
}

// TestHashKeyRotation: keys digested under an older hash key (or under
// the single legacy one) keep verifying under the new list and are
// re-digested under the current entry at their next successful
// verification, after which the old entry can go; the re-digest is a
// compare-and-set.
func TestHashKeyRotation(t *testing.T) {
	_, rdb := redistest.Mini(t)
	ctx := context.Background()
	hk := func(keys ...string) func(*Options) {
		return func(o *Options) {
			for _, k := range keys {
				o.HashKeys = append(o.HashKeys, HashKey{ID: k, Secret: []byte("secret-of-" + k)})
			}
		}
	}
	legacy := newEnv(t, rdb, func(o *Options) { o.HashKey = []byte("the-old-single-key") })
	v1 := newEnv(t, rdb, hk("v1"))
	a := mustCreate(t, legacy.store, CreateParams{Name: "a", Subject: "s"})
	b := mustCreate(t, v1.store, CreateParams{Name: "b", Subject: "s"})
	field := func(id, f string) string { return rdb.HGet(ctx, "keygate:key:"+id, f).Val() }
	if field(a.ID, fHashKey) != "" || field(b.ID, fHashKey) != "v1" {
		t.Fatalf("hash key IDs %q, %q; want none and v1", field(a.ID, fHashKey), field(b.ID, fHashKey))
	}

	// v2 is current; v1 and the legacy key still verify.
	v2 := newEnv(t, rdb, hk("v2", "v1"), func(o *Options) { o.HashKey = []byte("the-old-single-key") })
	ver := newVerifier(t, v2, VerifierOptions{})
	digestA := field(a.ID, fDigest)
	for _, k := range []*APIKey{a, b} {
		if _, err := ver.Verify(ctx, k.Secret, SourceAPI); err != nil {
			t.Fatalf("%s under the rotated keys: %v", k.Name, err)
		}
	}
	if err := v2.store.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*APIKey{a, b} {
		if got := field(k.ID, fHashKey); got != "v2" {
			t.Errorf("%s re-digested under %q, want v2", k.Name, got)
		}
	}
	if field(a.ID, fDigest) == digestA {
		t.Error("the digest did not change")
	}
	// Only v2 now: both still verify; the old entries are no longer needed.
	only := newEnv(t, rdb, hk("v2"))
	for _, k := range []*APIKey{a, b} {
		if _, err := only.store.Verify(ctx, k.Secret); err != nil {
			t.Errorf("%s with only v2: %v", k.Name, err)
		}
	}
	// A key under a hash key that is not configured is not found.
	c := mustCreate(t, v1.store, CreateParams{Name: "c", Subject: "s"})
	if _, err := only.store.Verify(ctx, c.Secret); !errors.Is(err, ErrNotFound) {
		t.Errorf("a key under an unknown hash key = %v, want ErrNotFound", err)
	}
	// Compare-and-set: a digest changed since the verification is kept.
	if _, err := v2.store.Verify(ctx, c.Secret); err != nil {
		t.Fatal(err)
	}
	rdb.HSet(ctx, "keygate:key:"+c.ID, fDigest, "changed meanwhile")
	if err := v2.store.FlushLastUsed(ctx); err != nil {
		t.Fatal(err)
	}
	if field(c.ID, fDigest) != "changed meanwhile" || field(c.ID, fHashKey) != "v1" {
		t.Error("the re-digest overwrote a digest changed since the verification")
	}
	for _, bad := range [][]HashKey{{{ID: "sha256", Secret: []byte("x")}}, {{ID: "a:b", Secret: []byte("x")}}, {{ID: "a"}}, {{ID: "a", Secret: []byte("x")}, {ID: "a", Secret: []byte("y")}}} {
		if _, err := New(rdb, Options{HashKeys: bad}); err == nil {
			t.Errorf("hash keys %+v accepted", bad)
		}
	}
}

// TestImport: an imported key verifies with its foreign secret through a
// verifier, is re-digested under the current hash key at its first
// verification, and is refused as a duplicate while it exists.
func TestImport(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		v := newVerifier(t, e, VerifierOptions{})
		waitLive(t, v)
		const foreign = "sk_live_51Hx9yLmN0pQrStUvWxYz"
		sum := sha256.Sum256([]byte(foreign))
		p := ImportParams{CreateParams: CreateParams{Name: "moved", Subject: "org_9", Scopes: []string{"read"}},
			Hash: ImportHash{Algorithm: "sha256", Value: hex.EncodeToString(sum[:])}}
		k, err := e.store.Import(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if k.Secret != "" || k.Name != "moved" || !k.Enabled {
			t.Fatalf("imported key %+v", k)
		}
		for range 2 {
			got, err := v.Verify(ctx, foreign, SourceAPI, "read")
			if err != nil || got.ID != k.ID {
				t.Fatalf("the foreign secret = %v, %v; want key %s", got, err, k.ID)
			}
		}
		for _, bad := range []string{foreign + "x", "sk_live_other", "with space"} {
			if _, err := v.Verify(ctx, bad, SourceAPI); !errors.Is(err, ErrMalformed) {
				t.Errorf("%q = %v, want ErrMalformed", bad, err)
			}
		}
		if _, err := e.store.Import(ctx, p); !isValidation(err) {
			t.Errorf("importing the same secret again = %v, want a ValidationError", err)
		}
		if err := e.store.FlushLastUsed(ctx); err != nil {
			t.Fatal(err)
		}
		if hk := e.rdb.HGet(ctx, "keygate:key:"+k.ID, fHashKey).Val(); hk != "" {
			t.Errorf("after its first verification the key is digested under %q, want the current key", hk)
		}
		if err := e.store.Delete(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(ctx, foreign, SourceAPI); !errors.Is(err, ErrNotFound) {
			t.Errorf("the deleted imported key = %v, want ErrNotFound", err)
		}
		if _, err := e.store.Import(ctx, p); err != nil {
			t.Errorf("importing the secret of a deleted key again = %v", err)
		}
		for _, h := range []ImportHash{{Algorithm: "md5", Value: hex.EncodeToString(sum[:])}, {Algorithm: "sha256", Value: "abc"}, {Algorithm: "sha256", Value: ""}} {
			if _, err := e.store.Import(ctx, ImportParams{CreateParams: p.CreateParams, Hash: h}); !isValidation(err) {
				t.Errorf("hash %+v = %v, want a ValidationError", h, err)
			}
		}
	})
}
