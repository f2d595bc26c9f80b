package redistest

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of Redis whose connections can be
// frozen (nothing forwarded, nothing closed: a host behind a dead NAT entry
// or a stuck load balancer), cut, or slowed down ([Proxy.SetLag]: a replica
// whose link lags).
type Proxy struct {
	Addr     string
	upstream string
	ln       net.Listener
	closed   chan struct{}
	refuse   atomic.Bool  // close new connections at once
	lag      atomic.Int64 // a time.Duration: see SetLag
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns []*proxyConn
}

type proxyConn struct {
	client, server net.Conn
	subscriber     atomic.Bool // the client sent SUBSCRIBE
	frozen         atomic.Bool
}

// NewProxy starts a proxy to upstream on a free loopback port, closed at
// the test's cleanup (t may be nil: then call Close).
func NewProxy(t testing.TB, upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), upstream: upstream, ln: ln, closed: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	if t != nil {
		t.Cleanup(p.Close)
	}
	return p, nil
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	for _, c := range p.conns {
		c.client.Close()
		c.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.refuse.Load() {
			client.Close()
			continue
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
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.pipe(c, server, client, true) }()
		if lag := time.Duration(p.lag.Load()); lag > 0 {
			go func() { defer p.wg.Done(); p.pipeLagged(client, server, lag) }()
		} else {
			go func() { defer p.wg.Done(); p.pipe(c, client, server, false) }()
		}
	}
}

// pipe copies src to dst; once the connection is frozen it holds what it
// reads until the proxy closes.
func (p *Proxy) pipe(c *proxyConn, dst, src net.Conn, fromClient bool) {
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

// SetLag makes the connections made from now on deliver what upstream
// sends lag after it arrived (what the client sends passes at once), as a
// replica's lagging link does; a [Proxy.Cut] loses what they had not
// delivered yet. They are not frozen by FreezeSubscribers or FreezeAll.
func (p *Proxy) SetLag(lag time.Duration) { p.lag.Store(int64(lag)) }

// pipeLagged copies src to dst, each chunk lag after it arrived.
func (p *Proxy) pipeLagged(dst, src net.Conn, lag time.Duration) {
	type chunk struct {
		due time.Time
		b   []byte
	}
	queue := make(chan chunk, 1024)
	done := make(chan struct{})
	defer dst.Close()
	defer close(done)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(queue)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				select {
				case queue <- chunk{time.Now().Add(lag), b[:n]}:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range queue {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.b); err != nil {
			return
		}
	}
}

// FreezeSubscribers stops forwarding on every connection that subscribed
// so far, in both directions, and returns how many there were.
func (p *Proxy) FreezeSubscribers() int {
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

// FreezeAll stops forwarding on every connection made so far, in both
// directions, and returns how many there were: a host whose link to Redis
// hangs. Connections made later are forwarded.
func (p *Proxy) FreezeAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.frozen.Store(true)
	}
	return len(p.conns)
}

// Cut closes every connection and, while refusing, every new one: a link
// that is down. Cut(false) lets new connections through again.
func (p *Proxy) Cut(refusing bool) {
	p.refuse.Store(refusing)
	if !refusing {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.client.Close()
		c.server.Close()
	}
	p.conns = nil
}
