// Package testkit holds the helpers that the tests of several packages
// share: free loopback ports, a clean environment for subprocesses, an
// HTTP request, polling for a condition, a logger into a buffer, metric
// values read from a registry, keygate's error body (docs/api.md), and a
// test application behind a proxy. Of keygate it imports only
// internal/apierror (the standard library alone), so that every package,
// keystore included, can use it in tests.
//
//	addr := testkit.FreeAddr(t)
//	if got := testkit.MetricValue(t, reg, "keygate_verifications_total", map[string]string{"result": "valid"}); got != 1 { … }
//	up := testkit.NewUpstream(t, nil)
//	… // send a request through the proxy to up.URL
//	if up.Last(t).Header.Get("X-Api-Key-Id") != k.ID { … }
package testkit

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// FreePort returns a loopback port that nothing listened on a moment ago,
// for a server the caller starts itself (redis-server, nginx, keygate).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is [FreePort] as a host:port address, failing the test when no
// port is free. Until the caller listens on it, nothing does: connections
// to it are refused, which is how tests reach a server that is down.
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// Dial connects to addr for a test that writes a request byte for byte.
// The connection is closed at cleanup at the latest, and every read and
// write on it fails after 30 seconds: a bound for a hung server, not a
// measurement.
func Dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// CleanEnv is the test's environment without the KEYGATE_ variables of
// whoever runs the tests, for the keygate processes that tests start: each
// test sets the variables it means.
func CleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KEYGATE_") })
}

// LogTo returns a text logger at debug level that writes to w, so that a
// test can look for what a log must or must not hold.
func LogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Bearer is the header that carries secret as a bearer token.
func Bearer(secret string) http.Header {
	return http.Header{"Authorization": {"Bearer " + secret}}
}

// Do sends a request with header and body through c (nil:
// http.DefaultClient) and returns the status, the headers and the body. It
// fails the test when the request cannot be sent or its body read.
func Do(t testing.TB, c *http.Client, method, url string, header http.Header, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, b
}

// WaitFor polls ok, every millisecond at first and then less often (at
// most every 20ms), until it holds, and fails the test naming what when it
// does not hold within within.
func WaitFor(t testing.TB, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for pause := time.Millisecond; !ok(); pause = min(2*pause, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(pause)
	}
}

// Merge returns one map with the entries of ms, a later map's entry
// winning over an earlier one's.
func Merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

// ErrorCode returns the code of the error body every keygate handler
// writes (docs/api.md): one error, and the trace ID. It fails the test on
// any other body.
func ErrorCode(t testing.TB, body []byte) string {
	t.Helper()
	var e struct {
		apierror.Body
		TraceID *string `json:"clerk_trace_id"` // present, even if empty
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.TraceID == nil {
		t.Fatalf("body is not keygate's error JSON: %q", body)
	}
	return e.Errors[0].Code
}

// MetricValue sums the counters and gauges of the family name in g whose
// labels include labels (nil: every sample of the family); 0 when no
// sample matches, as a counter vector has none before its first count.
func MetricValue(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	sum := 0.0
	for _, m := range samples(t, g, name, labels) {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// HistogramCount sums the observation counts of the histogram family name
// in g whose labels include labels; 0 when no sample matches.
func HistogramCount(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) uint64 {
	t.Helper()
	var n uint64
	for _, m := range samples(t, g, name, labels) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// samples gathers g and returns the samples of the family name whose
// labels include labels.
func samples(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) []*dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			out = append(out, m)
		}
	}
	return out
}
