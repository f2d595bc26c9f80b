package sidecar

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/keygate/keygate/keystore"
)

func TestSpoofable(t *testing.T) {
	cases := map[string]bool{
		"X-Api-Key-Subject":    true,
		"x-api-key-id":         true,
		"X-API-KEY-CLAIMS":     true,
		"X_Api_Key_Scopes":     true,
		"x_api-key_NAME":       true,
		"X-Api-Key-Future":     true,
		"X-Forwarded-For":      true,
		"x_forwarded_host":     true,
		"X-Forwarded-Anything": true,
		"Forwarded":            true,
		"X_Real_IP":            true,
		"true-client-ip":       true,
		"X-Original-URL":       true,
		"X_Rewrite_Url":        true,
		"X-Api-Key":            false, // the credential header is not an identity header
		"X_Api_Key":            false,
		"X-Api-Keys":           false,
		"X-Forwarded":          false,
		"Authorization":        false,
		"X-Real-Ip-2":          false,
	}
	for name, want := range cases {
		if got := spoofable(name); got != want {
			t.Errorf("spoofable(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSetIdentity(t *testing.T) {
	h := http.Header{HeaderKeyClaims: {"spoof"}}
	setIdentity(h, &keystore.APIKey{
		ID: "ak_0123", Subject: "org_1\r\nX-Evil: 1", Name: "Zoë's key\x00", Scopes: []string{"a", "b:c"},
		Claims: json.RawMessage("{ \"note\": \"tab\\there\", \"del\": \"\x7f\" }"),
	})
	want := map[string]string{
		HeaderKeyID:      "ak_0123",
		HeaderKeySubject: "org_1\uFFFD\uFFFDX-Evil: 1",
		HeaderKeyName:    "Zoë's key\uFFFD",
		HeaderKeyScopes:  "a b:c",
		HeaderKeyClaims:  `{"note":"tab\there","del":"\u007f"}`,
	}
	for name, v := range want {
		got := h.Values(name)
		if len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", name, got, v)
		}
		if !sendable(got[0]) {
			t.Errorf("%s = %q cannot be sent", name, got[0])
		}
	}
	var claims map[string]string
	if err := json.Unmarshal([]byte(h.Get(HeaderKeyClaims)), &claims); err != nil || claims["del"] != "\x7f" {
		t.Errorf("claims header does not decode to the claims: %v %q", err, claims)
	}

	setIdentity(h, &keystore.APIKey{ID: "ak_1", Scopes: []string{}, Claims: json.RawMessage("null")})
	if _, ok := h[HeaderKeyClaims]; ok {
		t.Error("claims header kept for a key with null claims")
	}
	if vs := h.Values(HeaderKeyScopes); len(vs) != 1 || vs[0] != "" {
		t.Errorf("scopes header %q for a key without scopes, want one empty value", vs)
	}
}

// sendable reports whether v is a valid header field value: no control
// character but tab (RFC 9110, section 5.5).
func sendable(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

func TestClaimsValueCompacts(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"org":"Acme Inc","n":1}`, `{"org":"Acme Inc","n":1}`}, // spaces inside strings stay
		{`{"a": [1, 2]}`, `{"a":[1,2]}`},
		{"{\"a\":\n1}", `{"a":1}`},
		{`{"q":"say \"hi there\"", "b":2}`, `{"q":"say \"hi there\"","b":2}`}, // escaped quotes do not end the string
		{`{"p":"C:\\ ", "b":2}`, `{"p":"C:\\ ","b":2}`},                       // an escaped backslash escapes nothing more
	} {
		if got := claimsValue(json.RawMessage(tc.in)); got != tc.want {
			t.Errorf("claimsValue(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
