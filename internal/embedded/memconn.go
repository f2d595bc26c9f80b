package embedded

import (
	"io"
	"net"
	"sync"
	"time"
)

// memConn is one end of an in-memory connection whose writes never wait
// for the reader. net.Pipe does not fit: it is unbuffered, and the engine
// writes each reply before it reads the next command, so a client that
// writes a large pipeline before it reads any reply would wait for the
// engine while the engine waits for it.
type memConn struct {
	r, w *memBuffer
}

// memPipe returns the two ends of an in-memory connection.
func memPipe() (net.Conn, net.Conn) {
	a, b := newMemBuffer(), newMemBuffer()
	return &memConn{r: a, w: b}, &memConn{r: b, w: a}
}

// memBuffer is one direction of a memConn.
type memBuffer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	closed bool
}

func newMemBuffer() *memBuffer {
	b := &memBuffer{}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *memBuffer) write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, net.ErrClosed
	}
	b.buf = append(b.buf, p...)
	b.cond.Broadcast()
	return len(p), nil
}

func (b *memBuffer) read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 && !b.closed {
		b.cond.Wait()
	}
	if len(b.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	if len(b.buf) == 0 {
		b.buf = nil
	}
	return n, nil
}

func (b *memBuffer) close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (c *memConn) Read(p []byte) (int, error)  { return c.r.read(p) }
func (c *memConn) Write(p []byte) (int, error) { return c.w.write(p) }

func (c *memConn) Close() error {
	c.r.close()
	c.w.close()
	return nil
}

// Deadlines are not kept: the engine always answers (the client has none).
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

func (c *memConn) LocalAddr() net.Addr  { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return memAddr{} }

type memAddr struct{}

func (memAddr) Network() string { return "memory" }
func (memAddr) String() string  { return "embedded" }
