package keystore

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// hangProxy is a loopback TCP proxy in front of Redis that can stop
// forwarding on the connections that subscribed, without closing them: a
// subscription that hangs, as behind a dead NAT entry or a stuck load
// balancer.
type hangProxy struct {
	addr     string
	upstream string
	ln       net.Listener
	closed   chan struct{}

	mu    sync.Mutex
	conns []*proxyConn
}

type proxyConn struct {
	client, server net.Conn
	subscriber     atomic.Bool // the client sent SUBSCRIBE
	frozen         atomic.Bool
}

func newHangProxy(t testing.TB, upstream string) *hangProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hangProxy{addr: ln.Addr().String(), upstream: upstream, ln: ln, closed: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.serve(&wg)
	}()
	t.Cleanup(func() {
		ln.Close()
		close(p.closed)
		p.mu.Lock()
		for _, c := range p.conns {
			c.client.Close()
			c.server.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *hangProxy) serve(wg *sync.WaitGroup) {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxyConn{client: client, server: server}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		wg.Add(2)
		go func() { defer wg.Done(); p.pipe(c, server, client, true) }()
		go func() { defer wg.Done(); p.pipe(c, client, server, false) }()
	}
}

// pipe copies src to dst; once the connection is frozen it holds what it
// reads until the proxy closes.
func (p *hangProxy) pipe(c *proxyConn, dst, src net.Conn, fromClient bool) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromClient && bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
				c.subscriber.Store(true)
			}
			if c.frozen.Load() {
				<-p.closed
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// freezeSubscribers stops forwarding on every connection that subscribed so
// far, in both directions, and returns how many there were.
func (p *hangProxy) freezeSubscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		if c.subscriber.Load() {
			c.frozen.Store(true)
			n++
		}
	}
	return n
}
