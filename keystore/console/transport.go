package console

import (
	"bytes"
	"io"
	"net/http"
	"strconv"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore/client"
)

// apiBase is the base URL of the in-process admin API: never dialled, only
// its path reaches the handler.
const apiBase = "http://admin-api.in-process"

// inProcess is an [http.RoundTripper] that hands each request to the admin
// API's handler in this process, as if the browser had sent it: from the
// browser's address (and X-Forwarded-For, which the admin API trusts only
// from its trusted proxies), under the console request's ID. So the admin
// API authenticates, authorizes, validates, audits and logs a console
// change exactly as it does any other call.
type inProcess struct {
	api  http.Handler
	from *http.Request // the browser's request
}

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.RemoteAddr = t.from.RemoteAddr
	r.Header.Del("X-Forwarded-For")
	for _, v := range t.from.Header.Values("X-Forwarded-For") {
		r.Header.Add("X-Forwarded-For", v)
	}
	r.Header.Set(apierror.HeaderRequestID, apierror.RequestID(t.from))
	r.RequestURI = r.URL.RequestURI()
	r.TLS = t.from.TLS
	if r.Body == nil {
		r.Body = http.NoBody
	}
	rec := &recorder{header: http.Header{}}
	t.api.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	body := rec.body.Bytes()
	rec.header.Set("Content-Length", strconv.Itoa(len(body)))
	return &http.Response{
		Status:        strconv.Itoa(rec.status) + " " + http.StatusText(rec.status),
		StatusCode:    rec.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rec.header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}, nil
}

// recorder is the [http.ResponseWriter] the admin API writes to in
// process.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// apiClient returns a client of the admin API that calls it in process
// with the signed-in admin token, on behalf of the browser's request r.
func (h *handler) apiClient(r *http.Request, s *signedIn) (*client.Client, error) {
	return client.New(apiBase, s.token.Token,
		client.WithHTTPClient(&http.Client{Transport: inProcess{api: h.opts.AdminAPI, from: r}}),
		client.WithUserAgent("keygate-console"))
}
