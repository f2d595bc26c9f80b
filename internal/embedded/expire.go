package embedded

import "time"

// The engine keeps a key's TTL but counts it down only when told to, and
// telling it walks every key; so the store expires keys itself: once a
// second, the keys whose expiry has passed are deleted, as a write (logged
// when durable). A key outlives its expiry by a second at most.

func (s *Store) expireLoop() {
	defer s.bg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.expireDue(); err != nil {
				s.opts.Logger.Error("embedded store: expiring keys", "err", err)
			}
		}
	}
}

// expireDue deletes the keys whose expiry has passed.
func (s *Store) expireDue() error {
	if s.exp.len() == 0 {
		return nil
	}
	now := s.now().UnixMilli()
	due := s.exp.due(now)
	if len(due) == 0 {
		return nil
	}
	s.writeMu.Lock()
	var err error
	for _, k := range due {
		// Checked again under the lock: a write may have moved it.
		if x, ok := s.exp.get(k); ok && x.at <= now {
			if err = s.writeConn.ok("DEL", k); err != nil {
				break
			}
		}
	}
	seq, cerr := s.capture()
	s.writeMu.Unlock()
	if err != nil {
		return err
	}
	if cerr == nil {
		cerr = s.wal.commit(seq)
	}
	if cerr != nil {
		return s.persistError(cerr)
	}
	return nil
}
