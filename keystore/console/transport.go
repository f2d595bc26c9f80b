package console

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore/client"
)

// apiBase is the base URL of the in-process admin API: never dialled, only
// its path reaches the handler.
const apiBase = "http://admin-api.in-process"

// inProcess is an [http.RoundTripper] that hands each request to the admin
// API's handler in this process, as if the browser had sent it: with the
// signed-in admin token, from the browser's address (and X-Forwarded-For,
// which the admin API trusts only from its trusted proxies), under the
// console request's ID; all of which the request's context carries
// ([withCaller]). So the admin API authenticates, authorizes, validates,
// audits and logs a console change exactly as it does any other call.
type inProcess struct {
	api http.Handler
}

// caller is what a call to the admin API takes from the browser's request.
type caller struct {
	token      string // the signed-in admin token
	remoteAddr string
	forwarded  []string // X-Forwarded-For
	requestID  string
	tls        *tls.ConnectionState
}

type callerKey struct{}

// withCaller returns r with a context that makes the console's admin API
// calls on behalf of r's browser and the session s.
func withCaller(r *http.Request, s *signedIn) *http.Request {
	c := &caller{token: s.token.Token, remoteAddr: r.RemoteAddr, forwarded: r.Header.Values("X-Forwarded-For"),
		requestID: apierror.RequestID(r), tls: r.TLS}
	return r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
}

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	from, _ := req.Context().Value(callerKey{}).(*caller)
	if from == nil {
		// Only page and action handlers call the admin API, and both set
		// the caller; without one the call is refused as unauthenticated.
		from = &caller{}
	}
	r := req.Clone(req.Context())
	r.RemoteAddr = from.remoteAddr
	r.Header.Del("X-Forwarded-For")
	for _, v := range from.forwarded {
		r.Header.Add("X-Forwarded-For", v)
	}
	r.Header.Set("Authorization", "Bearer "+from.token)
	r.Header.Set(apierror.HeaderRequestID, from.requestID)
	r.RequestURI = r.URL.RequestURI()
	r.TLS = from.tls
	if r.Body == nil {
		r.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.api.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.ContentLength = int64(rec.Body.Len())
	resp.Request = req
	return resp, nil
}

// newAPIClient returns the console's client of the admin API, which calls
// it in process with the admin token and on behalf of the browser that
// the call's context names ([withCaller]).
func newAPIClient(api http.Handler) (*client.Client, error) {
	// The client's own token is replaced by the caller's on every call.
	return client.New(apiBase, "in-process", client.WithHTTPClient(&http.Client{Transport: inProcess{api: api}}),
		client.WithUserAgent("keygate-console"))
}
