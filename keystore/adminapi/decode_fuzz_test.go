package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
)

// FuzzDecodeBody: decoding any body into any of the API's request types
// either succeeds on a valid UTF-8 JSON object (or an empty body), or
// fails with 400 request_body_invalid or 413 request_body_too_large;
// never a panic, never another error.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `null`, `[]`, `"x"`, `{"name":"n","subject":"s"}`, `{"name":1}`, `{"scopes":["a",2]}`,
		`{"scopes":{"a":1}}`, `{"claims":{"a":[1,{"b":null}]}}`, `{"seconds_until_expiration":1.5}`,
		`{"seconds_until_expiration":-9223372036854775809}`, `{"description":null}`, `{"x":1}`, `{"name":"n"}garbage`,
		`{"name":"n"`, "{\"name\":\"\xc3\"}", `{"name":"\ud800"}`, `{"revocation_reason":""}`, `{"secret":null}`,
		`{"subject":null,"scopes":null,"claims":null}`, `{"created_by":{"id":1}}`, `{"type":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{
			new(keystore.CreateParams),
			new(updateBody),
			new(struct {
				RevocationReason *string `json:"revocation_reason"`
			}),
			new(struct {
				Secret string `json:"secret"`
			}),
		}
		for _, dst := range targets {
			r := httptest.NewRequest("POST", "/api_keys", bytes.NewReader(body))
			err := decodeBody(r, dst)
			if err == nil {
				trimmed := bytes.TrimSpace(body)
				if len(body) > MaxBodyBytes || !utf8.Valid(body) || len(trimmed) > 0 && (trimmed[0] != '{' || !json.Valid(trimmed)) {
					t.Fatalf("decodeBody(%T) accepted %q", dst, body)
				}
				if b, ok := dst.(*updateBody); ok {
					if _, err := b.params(); err != nil {
						checkBadBody(t, body, err, http.StatusBadRequest)
					}
				}
				continue
			}
			checkBadBody(t, body, err, 0)
		}
	})
}

// checkBadBody fails unless err is docs/api.md's 400 request_body_invalid
// or 413 request_body_too_large (only status, when not 0).
func checkBadBody(t *testing.T, body []byte, err error, status int) {
	t.Helper()
	var e *apierror.Error
	if !errors.As(err, &e) {
		t.Fatalf("body %q: %v is not an *apierror.Error", body, err)
	}
	switch {
	case e.Status == http.StatusBadRequest && e.Code == "request_body_invalid":
	case e.Status == http.StatusRequestEntityTooLarge && e.Code == "request_body_too_large" && len(body) > MaxBodyBytes:
	default:
		t.Fatalf("body %q: %d %s, want 400 request_body_invalid or 413", body, e.Status, e.Code)
	}
	if status != 0 && e.Status != status {
		t.Fatalf("body %q: status %d, want %d", body, e.Status, status)
	}
}

// FuzzListParams: the query of GET /api_keys either gives parameters within
// the limits of docs/api.md or a 400 form_param_invalid naming one of them.
func FuzzListParams(f *testing.F) {
	for _, s := range []string{"", "limit=100&offset=0", "limit=0", "limit=101", "offset=-1", "offset=2147483648",
		"include_invalid=true", "include_invalid=1", "subject=%ff", "query=a&query=b", "limit=+7", "limit=0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw)
		p, err := listParams(q)
		if err != nil {
			var e *apierror.Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != "form_param_invalid" || e.Param == "" {
				t.Fatalf("listParams(%q) = %v, want 400 form_param_invalid naming the parameter", raw, err)
			}
			return
		}
		if p.Limit < 1 || p.Limit > keystore.MaxLimit || p.Offset < 0 || p.Offset > keystore.MaxOffset {
			t.Fatalf("listParams(%q) = limit %d offset %d: out of range", raw, p.Limit, p.Offset)
		}
		if !utf8.ValidString(p.Subject) || !utf8.ValidString(p.Query) || !utf8.ValidString(p.Type) {
			t.Fatalf("listParams(%q) let invalid UTF-8 through", raw)
		}
	})
}
