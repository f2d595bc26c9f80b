package middleware

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzParseKeyLookup: any spec either parses into header and query
// sources with names, one per comma-separated part, or is refused; and the
// lookup, on any request, returns either nothing or a trimmed, non-empty
// value that the request carried in a source the spec names.
func FuzzParseKeyLookup(f *testing.F) {
	for _, s := range []struct{ spec, name, value, query string }{
		{"", "Authorization", "Bearer ak_x", ""},
		{"", "Authorization", "bearer   ak_x  ", ""},
		{"", "Authorization", "Basic dXNlcjpwYXNz", ""},
		{"", "X-Api-Key", " k ", ""},
		{"header:Authorization", "Authorization", "BEARER k", ""},
		{"header:Authorization:", "Authorization", "whole value", ""},
		{"header:X-Token:Token ", "X-Token", "Token k", ""},
		{"query:api_key", "", "", "api_key=k&x=1"},
		{"header:Authorization:Bearer ,query:api_key", "Authorization", "Bearer", "api_key=%20k%20"},
		{"query:api_key:pfx", "", "", ""},
		{"form:key", "", "", ""},
		{"cookie:session", "", "", ""},
		{"header:", "", "", ""},
		{" header : x-api-key ", "X-Api-Key", "k", ""},
		{",,", "", "", ""},
		{"header:a:b:c", "A", "b:ck", ""},
		{"query:k", "", "", "k=%zz&k=v"},
	} {
		f.Add(s.spec, s.name, s.value, s.query)
	}
	f.Fuzz(func(t *testing.T, spec, name, value, rawQuery string) {
		kl, err := ParseKeyLookup(spec)
		if err != nil {
			if kl != nil {
				t.Fatalf("ParseKeyLookup(%q) returned a lookup and an error", spec)
			}
			return
		}
		parts := 2 // the default
		if strings.TrimSpace(spec) != "" {
			parts = strings.Count(spec, ",") + 1
		}
		if len(kl) != parts {
			t.Fatalf("ParseKeyLookup(%q) has %d sources, want %d", spec, len(kl), parts)
		}
		for _, l := range kl {
			if (l.source != "header" && l.source != "query") || l.name == "" {
				t.Fatalf("ParseKeyLookup(%q) made the source %+v", spec, l)
			}
			if l.source == "query" && l.prefix != "" {
				t.Fatalf("ParseKeyLookup(%q) gave a query source a prefix", spec)
			}
		}
		for _, h := range kl.Headers() {
			if h != http.CanonicalHeaderKey(h) {
				t.Fatalf("Headers() of %q holds %q, not canonical: a proxy would not remove it", spec, h)
			}
		}

		r := &http.Request{Header: http.Header{}, URL: &url.URL{RawQuery: rawQuery}}
		if name != "" {
			r.Header[http.CanonicalHeaderKey(name)] = []string{value}
		}
		got := kl.Key(r)
		if got == "" {
			return
		}
		if got != strings.TrimSpace(got) {
			t.Fatalf("Key = %q: not trimmed", got)
		}
		fromHeader := name != "" && strings.Contains(value, got) && slices.Contains(kl.Headers(), http.CanonicalHeaderKey(name))
		fromQuery := false
		q := r.URL.Query()
		for _, p := range kl.QueryParams() {
			for _, v := range q[p] {
				fromQuery = fromQuery || strings.Contains(v, got)
			}
		}
		if !fromHeader && !fromQuery {
			t.Fatalf("Key = %q, which the request (%s: %q, ?%s) does not carry where %q looks", got, name, value, rawQuery, spec)
		}
	})
}

// FuzzDefaultKeyLookup checks the default lookup against its definition:
// a Bearer token (any case of the scheme), then X-API-Key.
func FuzzDefaultKeyLookup(f *testing.F) {
	f.Add("Bearer ak_x", "")
	f.Add("bearer\tak_x", "ak_y")
	f.Add("Bearer ", " ak_y ")
	f.Add("Basic abc", "ak_y")
	f.Add("", "")
	kl := MustParseKeyLookup("")
	f.Fuzz(func(t *testing.T, authorization, apiKey string) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{}}
		if authorization != "" {
			r.Header.Set("Authorization", authorization)
		}
		if apiKey != "" {
			r.Header.Set("X-Api-Key", apiKey)
		}
		want := ""
		if len(authorization) >= 7 && strings.EqualFold(authorization[:7], "Bearer ") {
			want = strings.TrimSpace(authorization[7:])
		}
		if want == "" {
			want = strings.TrimSpace(apiKey)
		}
		if got := kl.Key(r); got != want {
			t.Fatalf("Authorization %q, X-API-Key %q: Key = %q, want %q", authorization, apiKey, got, want)
		}
	})
}
