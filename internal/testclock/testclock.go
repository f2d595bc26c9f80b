// Package testclock is a clock that tests move by hand, for the Now options
// of keystore.Options, so that no test sleeps to cross an expiry or a TTL.
//
//	c := testclock.New()
//	store, _ := keystore.New(rdb, keystore.Options{Now: c.Now})
//	c.Advance(time.Hour)
package testclock

import (
	"sync"
	"time"
)

// Start is where every new Clock starts: a fixed instant, so that runs are
// repeatable.
var Start = time.UnixMilli(1_750_000_000_000)

// Clock is safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock at [Start].
func New() *Clock { return &Clock{now: Start} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}
