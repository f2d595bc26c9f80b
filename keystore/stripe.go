package keystore

import (
	"sync"
	"sync/atomic"
)

// stripes is how many ways the counts that every verification writes are
// split (the verification metrics, the usage history, the pending
// last-used times), so that verifications on several cores do not write
// the same cache lines.
const stripes = 16

// stripe is the number of the stripes that a processor writes to. A
// verification takes one with takeStripe, writes every striped count it
// has to that stripe, and gives it back with release: one [sync.Pool]
// round trip for all of them. The pool's items stay with the processor
// that put them back, so a core keeps writing to the same stripes. Two
// callers may hold the same number (the pool may drop its items at a
// garbage collection, and a processor without one takes the next one
// round), so the stripes stay safe to share: atomic counters, or maps
// under a lock.
type stripe struct{ n uint32 }

var (
	stripeNumbers [stripes]stripe
	ownedStripes  sync.Pool     // *stripe, per processor
	nextStripe    atomic.Uint32 // the number a processor without one takes
)

// takeStripe returns the stripe of the calling processor.
func takeStripe() *stripe {
	if s, ok := ownedStripes.Get().(*stripe); ok {
		return s
	}
	return &stripeNumbers[nextStripe.Add(1)%stripes]
}

func (s *stripe) release() { ownedStripes.Put(s) }
