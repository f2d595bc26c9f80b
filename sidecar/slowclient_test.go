package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
)

// TestServerLimits checks what every server keygate runs is built with:
// the proxy listener (no read or write timeout, so that streams pass) and
// the servers of short exchanges (serve's one listener, the sidecar's ops
// listener).
func TestServerLimits(t *testing.T) {
	h := http.NotFoundHandler()
	for _, tc := range []struct {
		name         string
		srv          *http.Server
		readAndWrite bool
	}{
		{"NewServer", NewServer("", h), true},
		{"NewProxyServer", NewProxyServer("", h), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.srv
			if s.ReadHeaderTimeout <= 0 || s.IdleTimeout <= 0 {
				t.Fatalf("ReadHeaderTimeout %v, IdleTimeout %v: both must be set", s.ReadHeaderTimeout, s.IdleTimeout)
			}
			if s.MaxHeaderBytes <= 0 || s.MaxHeaderBytes > 1<<20 {
				t.Fatalf("MaxHeaderBytes %d, want set and below net/http's 1 MiB default", s.MaxHeaderBytes)
			}
			if tc.readAndWrite && (s.ReadTimeout <= 0 || s.WriteTimeout <= 0) {
				t.Fatalf("ReadTimeout %v, WriteTimeout %v: both must be set", s.ReadTimeout, s.WriteTimeout)
			}
		})
	}
}

// serveOn serves srv on a loopback port until the test ends and returns
// the address.
func serveOn(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// waitReady waits, a bounded time, until e's verifier is subscribed, so
// that its goroutines are running before a test counts goroutines.
func waitReady(t *testing.T, e *env) {
	t.Helper()
	for i := 0; e.verifier.Ready(context.Background()) != nil; i++ {
		if i == 1000 {
			t.Fatal("the verifier is not ready after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settleGoroutines waits, a bounded time, for the goroutine count to come
// back to at most limit, and returns the last count.
func settleGoroutines(limit int) int {
	n := runtime.NumGoroutine()
	for i := 0; i < 500 && n > limit; i++ {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

// TestSlowlorisIsCutOff opens connections that send their headers one byte
// at a time and never finish them: the server must close each once
// ReadHeaderTimeout passes (shortened here; the servers ship with 10 s),
// long before the client would have finished, and the goroutines they held
// must go.
func TestSlowlorisIsCutOff(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	up := newUpstream(t)
	u, _ := url.Parse(up.URL)
	proxy, err := NewProxy(e.verifier, ProxyOptions{Upstream: u})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, e)
	for _, tc := range []struct {
		name string
		srv  *http.Server
	}{
		{"NewServer with forward-auth", NewServer("", forwardAuthMux(t, e, ForwardAuthOptions{}))},
		{"NewProxyServer with the proxy", NewProxyServer("", proxy)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.srv.ReadHeaderTimeout = 200 * time.Millisecond
			addr := serveOn(t, tc.srv)
			baseline := runtime.NumGoroutine()

			const clients = 16
			const pad = 400 // bytes sent one at a time, 25 ms apart: 10 s if never cut off
			var wg sync.WaitGroup
			results := make(chan string, clients)
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- slowloris(addr, pad)
				}()
			}
			wg.Wait()
			close(results)
			for r := range results {
				if r != "" {
					t.Fatal(r)
				}
			}
			if n := settleGoroutines(baseline + 2); n > baseline+2 {
				t.Fatalf("%d goroutines after the slow clients were cut off, %d before", n, baseline)
			}
		})
	}
}

// slowloris sends a request's headers one byte at a time, never ending
// them, and returns "" if the server hung up before the client ran out of
// bytes, or what went wrong.
func slowloris(addr string, pad int) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c) // returns when the server closes the connection
		close(closed)
	}()
	msg := "GET /forward-auth HTTP/1.1\r\nHost: keygate\r\nX-Slow: " + strings.Repeat("a", pad)
	for i := 0; i < len(msg); i++ {
		select {
		case <-closed:
			return ""
		case <-time.After(25 * time.Millisecond):
		}
		if _, err := c.Write([]byte{msg[i]}); err != nil {
			return ""
		}
	}
	return fmt.Sprintf("the server still held the connection after the client sent %d header bytes over %v",
		len(msg), time.Duration(len(msg))*25*time.Millisecond)
}

func TestHeadersTooLarge(t *testing.T) {
	srv := NewServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the handler ran for a request whose headers exceed MaxHeaderBytes")
	}))
	addr := serveOn(t, srv)
	req, _ := http.NewRequest("GET", "http://"+addr+"/api_keys", nil)
	req.Header.Set("X-Big", strings.Repeat("b", MaxHeaderBytes+8<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

// TestRefusalDoesNotWaitForTheBody: a client without a valid key announces
// a body and sends almost none of it. The proxy listener has no
// ReadTimeout, so if the server waited for the body before answering (as
// net/http does for bodies under 256 KiB, to keep the connection), the
// client would hold a goroutine as long as it liked. The refusal must come
// at once, with the connection closed.
func TestRefusalDoesNotWaitForTheBody(t *testing.T) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	k := e.fixtures(t)
	up := newUpstream(t)
	u, _ := url.Parse(up.URL)
	proxy, err := NewProxy(e.verifier, ProxyOptions{Upstream: u})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveOn(t, NewProxyServer("", proxy))
	for _, tc := range []struct{ name, head string }{
		{"no key, Content-Length", "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"},
		{"revoked key, chunked", "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + k.revoked.Secret +
			"\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789"},
		{"path escaping a prefix", "PUT /a/..;/b HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A bound for a test that fails, not a measurement: the answer
			// needs no more bytes from the client.
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tc.head+"abc"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer while the body is pending: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 401 && resp.StatusCode != 400 || !resp.Close {
				t.Fatalf("status %d, close %v; want a refusal that closes the connection", resp.StatusCode, resp.Close)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the refusal the connection is still open: %v", err)
			}
		})
	}
	if up.Hits() != 0 {
		t.Fatalf("the upstream saw %d requests", up.Hits())
	}
}
