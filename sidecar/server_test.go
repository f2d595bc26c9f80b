package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

func TestServeDrainsInFlightRequests(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	srv := NewProxyServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, srv, ln, 10*time.Second) }()

	type result struct {
		status int
		body   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	cancel()

	// Wait (bounded) until the listener is closed: shutdown has begun.
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if i == 500 {
			t.Fatal("the listener still accepts connections after the context was cancelled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) while a request was in flight", err)
	default:
	}
	close(release)
	r := <-got
	if r.err != nil || r.status != 200 || r.body != "finished" {
		t.Fatalf("in-flight request: %d %q %v, want 200 finished", r.status, r.body, r.err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v, want nil after a clean drain", err)
	}
}

func TestServeClosesStreamsAfterTheDrainPeriod(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	srv := NewProxyServer("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done() // an endless stream
		close(cancelled)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, srv, ln, 50*time.Millisecond) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-started
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream's handler was not cancelled when its connection was closed")
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		// A closed chunked stream ends without its terminating chunk.
		t.Fatal("the client read a complete stream; want it cut")
	}
}

func TestServersHaveTimeouts(t *testing.T) {
	p := NewProxyServer(":0", nil)
	if p.ReadHeaderTimeout == 0 || p.IdleTimeout == 0 || p.ReadTimeout != 0 || p.WriteTimeout != 0 {
		t.Errorf("proxy server: header %v idle %v read %v write %v; want header and idle only", p.ReadHeaderTimeout, p.IdleTimeout, p.ReadTimeout, p.WriteTimeout)
	}
	s := NewServer(":0", nil)
	if s.ReadHeaderTimeout == 0 || s.IdleTimeout == 0 || s.ReadTimeout == 0 || s.WriteTimeout == 0 {
		t.Errorf("server: header %v idle %v read %v write %v; want all four", s.ReadHeaderTimeout, s.IdleTimeout, s.ReadTimeout, s.WriteTimeout)
	}
	tr := NewTransport()
	if tr.DialContext == nil || tr.TLSHandshakeTimeout == 0 || tr.ResponseHeaderTimeout == 0 || tr.Proxy != nil {
		t.Errorf("transport: %+v", tr)
	}
}
