package keystore

import (
	"strings"
	"testing"
)

func TestSecretForm(t *testing.T) {
	for _, prefix := range []string{"ak_", "acme_live_", "X_"} {
		id, err := newID()
		if err != nil {
			t.Fatal(err)
		}
		secret, err := newSecret(prefix, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(secret) != len(prefix)+bodyLen || !strings.HasPrefix(secret, prefix) {
			t.Fatalf("secret %q has the wrong form", secret)
		}
		for _, c := range []byte(secret) {
			if !isAlnum(c) && c != '_' {
				t.Fatalf("secret %q holds %q; a double-click would not select it whole", secret, c)
			}
		}
		idHex, err := parseSecret(prefix, secret)
		if err != nil || idPrefix+idHex != id {
			t.Fatalf("parseSecret(%q) = %q, %v; want %s", secret, idHex, err, id)
		}
	}
}

func TestSecretsDiffer(t *testing.T) {
	seen := map[string]bool{}
	id, _ := newID()
	for i := 0; i < 1000; i++ {
		s, _ := newSecret("ak_", id)
		random := s[3+idHexLen : 3+idHexLen+randomLen]
		if seen[random] {
			t.Fatalf("random part repeated after %d secrets", i)
		}
		seen[random] = true
	}
}

func TestParseSecretRefuses(t *testing.T) {
	id, _ := newID()
	good, _ := newSecret("ak_", id)
	upper := "ak_" + strings.ToUpper(good[3:3+idHexLen]) + good[3+idHexLen:]
	for _, tc := range []struct{ name, secret string }{
		{"empty", ""},
		{"prefix only", "ak_"},
		{"other prefix", "sk_" + good[3:]},
		{"no prefix", good[3:] + "abc"},
		{"one short", good[:len(good)-1]},
		{"one long", good + "a"},
		{"checksum changed", good[:len(good)-1] + flip(good[len(good)-1])},
		{"random part changed", good[:50] + flip(good[50]) + good[51:]},
		{"id changed", good[:5] + flip(good[5]) + good[6:]},
		{"uppercase id", upper},
		{"dash", good[:40] + "-" + good[41:]},
		{"space", good[:40] + " " + good[41:]},
		{"non-ASCII", good[:40] + "é" + good[42:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseSecret("ak_", tc.secret); err != ErrMalformed {
				t.Fatalf("parseSecret = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestValidPrefix(t *testing.T) {
	for p, want := range map[string]bool{
		"ak_": true, "acme_live_": true, "A1_": true, "_": true,
		"": false, "ak": false, "ak-": false, "a k_": false, strings.Repeat("a", 32) + "_": false,
	} {
		if got := ValidPrefix(p); got != want {
			t.Errorf("ValidPrefix(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestDigest(t *testing.T) {
	plain := newDigester(nil)
	keyed := newDigester([]byte("k"))
	a, b := plain.sum("ak_x"), keyed.sum("ak_x")
	if a == b {
		t.Fatal("HMAC digest equals the plain SHA-256 digest")
	}
	if keyed.sum("ak_x") != b || plain.sum("ak_x") != a {
		t.Fatal("digests are not deterministic")
	}
	if keyed.sum("ak_y") == b {
		t.Fatal("different secrets, same digest")
	}
}

func BenchmarkParseAndDigest(b *testing.B) {
	id, _ := newID()
	secret, _ := newSecret("ak_", id)
	for _, bc := range []struct {
		name string
		d    digester
	}{{"sha256", newDigester(nil)}, {"hmac", newDigester([]byte("0123456789abcdef0123456789abcdef"))}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parseSecret("ak_", secret); err != nil {
					b.Fatal(err)
				}
				bc.d.sum(secret)
			}
		})
	}
}
