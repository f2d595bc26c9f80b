package adminapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	legacyrouter "github.com/getkin/kin-openapi/routers/legacy"

	"github.com/keygate/keygate/keystore/adminapi"
)

// openAPI is the document adminapi.OpenAPI serves, loaded and checked
// once, and a router over it.
var openAPI = sync.OnceValues(func() (*apiDoc, error) {
	rec := httptest.NewRecorder()
	adminapi.OpenAPI().ServeHTTP(rec, httptest.NewRequest("GET", adminapi.OpenAPIPath, nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		return nil, errors.New("GET " + adminapi.OpenAPIPath + ": " + strconv.Itoa(rec.Code) + " " + rec.Header().Get("Content-Type"))
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(rec.Body.Bytes())
	if err != nil {
		return nil, err
	}
	if doc.OpenAPI != "3.1.0" {
		return nil, errors.New("not an OpenAPI 3.1 document: " + doc.OpenAPI)
	}
	router, err := legacyrouter.NewRouter(doc) // validates the document
	if err != nil {
		return nil, err
	}
	return &apiDoc{doc: doc, router: router}, nil
})

type apiDoc struct {
	doc    *openapi3.T
	router routers.Router
}

// validated wraps h so that every request the tests make, and every
// response h gives, is checked against the OpenAPI document; a mismatch
// fails t. The rules:
//
//   - every response matches the document: a status the operation lists,
//     its headers, and its body;
//   - a request the API accepted (2xx) is one the document allows: the
//     document is never stricter than the API (its body read as JSON,
//     whatever its Content-Type, as the document says);
//   - a path or method the document does not list is answered as its
//     description says (404 resource_not_found, 405 method_not_allowed,
//     or 401 and 429 before routing), with the Error body.
func validated(t testing.TB, h http.Handler) http.Handler {
	d, err := openAPI()
	if err != nil {
		t.Fatalf("the OpenAPI document: %v", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var reqBody bytes.Buffer
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &teeBody{ReadCloser: r.Body, copy: &reqBody}
		}
		rec := &responseCopy{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if err := d.check(r, reqBody.Bytes(), rec); err != nil {
			t.Errorf("%s %s → %d: does not match the OpenAPI document: %v\nresponse: %.300s", r.Method, r.URL.Path, rec.status, err, rec.body.String())
		}
	})
}

func (d *apiDoc) check(r *http.Request, reqBody []byte, rec *responseCopy) error {
	ctx := context.Background()
	req := r.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	// The document's servers are relative ("/v1" and "/"): the router
	// matches them against the URL as a server receives it, path only.
	req.URL.Scheme, req.URL.Host = "", ""
	// The document says bodies are read as JSON whatever their
	// Content-Type, and so the API reads them.
	req.Header.Set("Content-Type", "application/json")
	route, params, known := d.find(req)
	if route == nil {
		return d.unrouted(known, rec)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}}
	if rec.status/100 == 2 {
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil {
			return errors.New("the API accepted a request the document refuses: " + err.Error())
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rec.status, Header: rec.header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	out.SetBodyBytes(rec.body.Bytes())
	return openapi3filter.ValidateResponse(ctx, out)
}

// find returns the operation the document gives req, with its path
// parameters. The router is more lenient than the API (it takes
// "/api_keys/" for "/api_keys", an empty {id}, and "verify" for an {id});
// a route counts only when its path, filled in, is the request's path,
// every parameter is non-empty, and no fixed path of the document is the
// request's. Without one, known reports whether the path is one the
// document lists for another method.
func (d *apiDoc) find(req *http.Request) (route *routers.Route, params map[string]string, known bool) {
	path := req.URL.EscapedPath() // as the router reads it
	if rest, ok := strings.CutPrefix(path, "/v1"); ok && strings.HasPrefix(rest, "/") {
		path = rest
	}
	exact := func(r *http.Request) (*routers.Route, map[string]string) {
		route, params, err := d.router.FindRoute(r)
		if err != nil {
			return nil, nil
		}
		filled := route.Path
		for name, v := range params {
			if v == "" {
				return nil, nil
			}
			filled = strings.ReplaceAll(filled, "{"+name+"}", v)
		}
		if filled != path || (strings.Contains(route.Path, "{") && d.doc.Paths.Value(path) != nil) {
			return nil, nil
		}
		return route, params
	}
	if route, params = exact(req); route != nil {
		return route, params, false
	}
	if d.doc.Paths.Value(path) != nil {
		return nil, nil, true
	}
	for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
		other := req.Clone(req.Context())
		other.Method = m
		if r, _ := exact(other); r != nil {
			return nil, nil, true
		}
	}
	return nil, nil, false
}

// unrouted checks the answer to a request the document has no operation
// for: 405 on a path it lists (for other methods), 404 elsewhere, or the
// 401 and 429 that come before routing.
func (d *apiDoc) unrouted(known bool, rec *responseCopy) error {
	want := map[int]string{401: "Unauthorized", 429: "TooManyRequests", 404: "NotFound"}
	if known {
		delete(want, 404)
		want[405] = "MethodNotAllowed"
	}
	name, ok := want[rec.status]
	if !ok {
		return fmt.Errorf("a request the document has no operation for (a path it lists: %v) got %d", known, rec.status)
	}
	resp := d.doc.Components.Responses[name].Value
	for hname, h := range resp.Headers {
		if h.Value.Required && rec.header.Get(hname) == "" {
			return errors.New("no " + hname + " header")
		}
	}
	var body any
	if err := json.Unmarshal(rec.body.Bytes(), &body); err != nil {
		return err
	}
	return resp.Content.Get("application/json").Schema.Value.VisitJSON(body, openapi3.EnableJSONSchema2020())
}

// teeBody copies what the handler reads of the request body.
type teeBody struct {
	io.ReadCloser
	copy *bytes.Buffer
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.copy.Write(p[:n])
	return n, err
}

// responseCopy passes a response on and keeps its status, headers and
// body.
type responseCopy struct {
	http.ResponseWriter
	status int
	header http.Header
	body   bytes.Buffer
}

func (c *responseCopy) WriteHeader(status int) {
	if c.status == 0 {
		c.status, c.header = status, c.ResponseWriter.Header().Clone()
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *responseCopy) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.WriteHeader(http.StatusOK)
	}
	c.body.Write(b)
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (c *responseCopy) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// TestOpenAPIDocument checks the document itself, and that GET
// /v1/openapi.json serves it without an admin token while other methods
// get 405.
func TestOpenAPIDocument(t *testing.T) {
	d, err := openAPI()
	if err != nil {
		t.Fatalf("the OpenAPI document: %v", err)
	}
	// Every route the handler serves is in the document, under both
	// prefixes.
	for _, path := range []string{"/api_keys", "/api_keys/verify", "/api_keys/{id}", "/api_keys/{id}/revoke", "/api_keys/{id}/secret", "/api_keys/{id}/usage"} {
		if d.doc.Paths.Find(path) == nil {
			t.Errorf("the document lacks %s", path)
		}
	}
	for _, s := range d.doc.Servers {
		if s.URL != "/v1" && s.URL != "/" {
			t.Errorf("server %q: the API is served under / and /v1", s.URL)
		}
	}
	h := adminapi.OpenAPI()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", adminapi.OpenAPIPath, nil))
	if rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST %s: %d, Allow %q", adminapi.OpenAPIPath, rec.Code, rec.Header().Get("Allow"))
	}
}

// TestUsageControlRoutes runs the usage-control parts of the API through
// the validating handler: keys with rate limits and credits (create,
// update, clear), verify with a cost until 429, and the usage history,
// so that the document's fields, headers and codes for them are held to
// the API too.
func TestUsageControlRoutes(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, `{"name":"metered","subject":"user_42","rate_limits":[{"name":"default","limit":2,"duration_ms":60000}],`+
		`"credits":{"remaining":5,"refill":{"interval":"month","amount":5,"day_of_month":31}}}`)
	if len(k.RateLimits) != 1 || k.Credits == nil || k.Credits.Refill.DayOfMonth != 31 {
		t.Fatalf("created %+v", k)
	}
	verify := func(body string) *httptest.ResponseRecorder { return e.do("POST", "/v1/api_keys/verify", body) }
	secret := `{"secret":"` + k.Secret + `"`
	if rec := verify(secret + `,"cost":1}`); rec.Code != 200 || rec.Header().Get("RateLimit") != `"default";r=1;t=30` ||
		rec.Header().Get("RateLimit-Policy") != `"default";q=2;w=60` {
		t.Fatalf("verify: %d RateLimit %q, Policy %q", rec.Code, rec.Header().Get("RateLimit"), rec.Header().Get("RateLimit-Policy"))
	}
	if rec := verify(secret + `,"cost":2}`); rec.Code != 429 || decodeError(t, rec).Code != "api_key_rate_limited" || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("over the rate limit: %d %s", rec.Code, rec.Body)
	}
	if rec := verify(secret + `,"cost":0}`); rec.Code != 400 || decodeError(t, rec).Param != "cost" {
		t.Fatalf("cost 0: %d %s", rec.Code, rec.Body)
	}

	// No rate limit, 3 credits left, refilled daily: out of credits at the
	// third request of cost 2.
	rec := e.do("PATCH", "/api_keys/"+k.ID, `{"rate_limits":null,"credits":{"remaining":3,"refill":{"interval":"day","amount":3}}}`)
	if got := decodeKey(t, rec); len(got.RateLimits) != 0 || got.Credits.Remaining != 3 {
		t.Fatalf("update: %s", rec.Body)
	}
	if rec := verify(secret + `,"cost":2}`); rec.Code != 200 || rec.Header().Get("RateLimit") != "" {
		t.Fatalf("verify with credits: %d %s", rec.Code, rec.Body)
	}
	if rec := verify(secret + `,"cost":2}`); rec.Code != 429 || decodeError(t, rec).Code != "api_key_usage_exceeded" {
		t.Fatalf("out of credits: %d %s", rec.Code, rec.Body)
	}
	if got := decodeKey(t, e.do("PATCH", "/api_keys/"+k.ID, `{"credits":null}`)); got.Credits != nil {
		t.Fatalf("credits cleared: %+v", got.Credits)
	}

	if err := e.store.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now().UnixMilli() // verifications are counted by the store's clock
	u := e.do("GET", "/v1/api_keys/"+k.ID+"/usage?granularity=minute&start="+strconv.FormatInt(now-60_000, 10)+"&end="+strconv.FormatInt(now+60_000, 10), "")
	if u.Code != 200 || !strings.Contains(u.Body.String(), `"valid":2`) || !strings.Contains(u.Body.String(), `"rate_limited":1`) ||
		!strings.Contains(u.Body.String(), `"usage_exceeded":1`) {
		t.Fatalf("usage: %d %s", u.Code, u.Body)
	}
	for _, q := range []string{"granularity=week", "start=-1", "start=7200000&end=3600000"} {
		if rec := e.do("GET", "/api_keys/"+k.ID+"/usage?"+q, ""); rec.Code != 400 {
			t.Errorf("usage?%s: %d, want 400", q, rec.Code)
		}
	}
	if rec := e.do("GET", "/api_keys/ak_00000000000000000000000000000000/usage", ""); rec.Code != 404 {
		t.Errorf("usage of an unknown key: %d, want 404", rec.Code)
	}
}
