// Package syncbuf is a buffer that many goroutines may write to at once: for
// tests that collect the logs or the output of servers and subprocesses.
//
//	var logs syncbuf.Buffer
//	store, _ := keystore.New(rdb, keystore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
//	…
//	if strings.Contains(logs.String(), secret) { … }
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer guarded by a mutex. The zero value is empty and
// ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
