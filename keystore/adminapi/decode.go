package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
)

// readBody reads the request body, at most [MaxBodyBytes]. Whatever the
// Content-Type says, the body is read as JSON; an empty one reads as {}.
// A body whose Content-Length is over the limit is refused before any of
// it is read, so that a client that sent Expect: 100-continue is told 413
// instead of being asked for the body.
func readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, errTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, errTooLarge
	case err != nil:
		return nil, badBody("", "reading the request body failed", err)
	case !utf8.Valid(body):
		// encoding/json would quietly turn invalid UTF-8 into U+FFFD.
		return nil, badBody("", "the request body must be valid UTF-8", nil)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return []byte("{}"), nil
	}
	return body, nil
}

var errTooLarge = &apierror.Error{Status: http.StatusRequestEntityTooLarge, Code: "request_body_too_large",
	Message: "request body too large", LongMessage: fmt.Sprintf("the request body must be at most %d bytes", MaxBodyBytes)}

// Bounds of what the handler reads of a body it refused as too large,
// after its 413 is on the wire: see [linger].
const (
	lingerBytes   = 1 << 20
	lingerTimeout = 2 * time.Second
)

// linger reads and discards, for at most lingerTimeout and lingerBytes,
// what the client still sends of a body refused as too large, once the
// 413 has been flushed. Closing a connection that has unread data makes
// the kernel reset it, and the reset can destroy the 413 before the client
// has read it; a client that reads the answer stops sending, and its
// remaining bytes are read here. A client that asked Expect: 100-continue
// and was refused before any read sends no body: nothing is read then.
func linger(w http.ResponseWriter, r *http.Request, body io.Reader) {
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	if r.ContentLength > MaxBodyBytes && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	_ = rc.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, body, lingerBytes)
}

// decodeBody reads the request body into dst, a pointer to a struct whose
// fields carry the wire names. Unknown fields, wrong types, trailing data
// and anything but a JSON object are request_body_invalid, naming the field
// when there is one.
func decodeBody(r *http.Request, dst any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if b := bytes.TrimSpace(body); b[0] != '{' {
		if !json.Valid(b) {
			return badBody("", "the request body is not valid JSON", nil)
		}
		return badBody("", "the request body must be a JSON object", nil)
	}
	if err := checkKeys(body, reflect.TypeOf(dst).Elem()); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err, reflect.TypeOf(dst).Elem())
	}
	if _, err := dec.Token(); err != io.EOF {
		return badBody("", "the request body must hold one JSON object and nothing after it", err)
	}
	return nil
}

// checkKeys refuses a body whose meaning depends on the parser that reads
// it: an object, at any depth, that holds the same key twice (encoding/json
// keeps the last, other parsers the first), and at the top a key that is
// not exactly one of the wire names of body's fields (encoding/json would
// take "SCOPES" for "scopes"). It reports nothing about JSON it cannot
// read: decoding it explains that.
func checkKeys(data []byte, body reflect.Type) error {
	type frame struct {
		object    bool
		expectKey bool
		keys      map[string]bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(data))
	top := "" // the top-level field being read
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		var f *frame
		if len(stack) > 0 {
			f = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if f != nil && f.object {
					f.expectKey = true // this value is the member's whole value
				}
				stack = append(stack, &frame{object: d == '{', expectKey: d == '{', keys: map[string]bool{}})
			default:
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return nil
				}
			}
			continue
		}
		if f == nil || !f.object || !f.expectKey {
			if f != nil && f.object {
				f.expectKey = true
			}
			continue
		}
		key := tok.(string)
		f.expectKey = false
		if len(stack) == 1 {
			top = key
			wire, known := wireName(body, key)
			switch {
			case f.keys[strings.ToLower(key)]:
				return badBody(wire, fmt.Sprintf("the field %q appears twice (or twice in different cases)", wire), nil)
			case known && wire != key:
				return badBody(key, fmt.Sprintf("unknown field %q (the field is %q: names are case-sensitive)", key, wire), nil)
			}
			f.keys[strings.ToLower(key)] = true
			continue
		}
		if f.keys[key] {
			return badBody(top, fmt.Sprintf("%s holds an object with the key %q twice", top, key), nil)
		}
		f.keys[key] = true
	}
}

// wireName returns the wire name of the field of struct type t that
// encoding/json would fill from key, and whether there is one. The fields
// of an embedded struct count as t's, as encoding/json reads them.
func wireName(t reflect.Type, key string) (string, bool) {
	if t.Kind() != reflect.Struct {
		return key, false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Tag.Get("json") == "" {
			if name, ok := wireName(f.Type, key); ok {
				return name, true
			}
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" && strings.EqualFold(name, key) {
			return name, true
		}
	}
	return key, false
}

// decodeError explains a failure to decode into a struct of type body,
// without echoing any of the body's values.
func decodeError(err error, body reflect.Type) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badBody("", "the request body is truncated JSON", err)
	case errors.As(err, &syntax):
		return badBody("", fmt.Sprintf("the request body is not valid JSON (at byte %d)", syntax.Offset), err)
	case errors.As(err, &typ):
		param := topLevel(typ.Field)
		if param == "" {
			return badBody("", "the request body must be a JSON object", err)
		}
		t := typ.Type
		if f, ok := fieldByWireName(body, param); ok {
			t = f.Type // "scopes must be an array of strings", not "…a string"
		}
		return badBody(param, fmt.Sprintf("%s must be %s", param, jsonKind(t)), err)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, _ = strconv.Unquote(name)
		return badBody(name, fmt.Sprintf("unknown field %q", name), err)
	}
	return badBody("", "the request body is not valid JSON", err)
}

// fieldByWireName finds the field of struct type t whose JSON name is name.
func fieldByWireName(t reflect.Type, name string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && f.Tag.Get("json") == "" {
			if ef, ok := fieldByWireName(f.Type, name); ok {
				return ef, true
			}
			continue
		}
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// topLevel returns the body field a decoding error path starts with:
// "scopes" for "scopes.2".
func topLevel(field string) string {
	name, _, _ := strings.Cut(field, ".")
	return name
}

// jsonKind names in JSON terms what a Go type accepts.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.String {
			return "an array of strings"
		}
		return "an array"
	case reflect.Pointer:
		return jsonKind(t.Elem()) + " or null"
	}
	return "a JSON object"
}

// decodeField decodes the raw value of one body field into dst, naming the
// field when the type is wrong.
func decodeField(param string, raw json.RawMessage, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields() // as the whole body's decoding does
	if err := dec.Decode(dst); err != nil {
		if strings.HasPrefix(err.Error(), "json: unknown field") {
			return badBody(param, param+": "+strings.TrimPrefix(err.Error(), "json: "), err)
		}
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return badBody(param, fmt.Sprintf("%s must be %s", param, jsonKind(reflect.TypeOf(dst).Elem())), err)
		}
		return badBody(param, param+" is not valid JSON", err)
	}
	return nil
}

// maxOffset bounds offset so that offset+limit cannot overflow.
const maxOffset = math.MaxInt32

// listParams reads the query of GET /api_keys. include_invalid must be
// true or false; limit and offset must be decimal integers in range.
// Unknown parameters are ignored, as Clerk's API ignores them.
func listParams(q url.Values) (keystore.ListParams, error) {
	p := keystore.ListParams{
		Subject: q.Get("subject"),
		Query:   q.Get("query"),
		Type:    q.Get("type"),
		Limit:   keystore.DefaultLimit,
	}
	if v, ok := q["include_invalid"]; ok {
		switch v[0] {
		case "true":
			p.IncludeInvalid = true
		case "false":
		default:
			return p, badQuery("include_invalid", "include_invalid must be true or false")
		}
	}
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > keystore.MaxLimit {
			return p, badQuery("limit", fmt.Sprintf("limit must be an integer between 1 and %d", keystore.MaxLimit))
		}
		p.Limit = n
	}
	if v, ok := q["offset"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 || n > maxOffset {
			return p, badQuery("offset", fmt.Sprintf("offset must be an integer between 0 and %d", maxOffset))
		}
		p.Offset = n
	}
	for _, name := range []string{"subject", "query", "type"} {
		if !utf8.ValidString(q.Get(name)) {
			return p, badQuery(name, name+" must be valid UTF-8")
		}
	}
	return p, nil
}
