// Package embedded runs the store a new user gets with no Redis: an
// in-process Redis (miniredis, served without a network listener) whose
// changes are kept in a directory.
//
//	e, err := embedded.Open("./keygate-data", embedded.Options{
//		Ephemeral: func(key string) bool { return keystore.IsEphemeral("keygate", key) },
//	})
//	rdb := e.Client() // a go-redis client on it
//	defer e.Close()
//
// Every command that changes a durable key is on disk, in an append-only
// log, before its caller sees the reply; concurrent writes share one fsync.
// What a write costs follows what it changed, not the size of the data set.
// When the log outgrows the last snapshot, a new snapshot is written in the
// background. Ephemeral keys ([Options.Ephemeral]) never reach the disk, so
// an idle store writes nothing. docs/embedded-store.md has the design and
// the files.
//
// One process at a time: [Open] locks the directory, and a second Open
// fails with [ErrLocked].
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// ErrLocked reports a data directory that another process has open.
var ErrLocked = errors.New("the data directory is in use by another keygate process (the embedded store allows one)")

// Options configure [Open]. The zero value works.
type Options struct {
	// Ephemeral reports the keys that are recreated when their owners start
	// (a verifier registry, acknowledgements): they are never written to
	// disk. Default: none, every key is durable.
	Ephemeral func(key string) bool
	// Logger receives warnings (a torn write dropped at start) and errors of
	// background work. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of key expiry. Default time.Now.
	Now func() time.Time
	// CompactRatio is how large the log may grow, as a multiple of the
	// last snapshot (and at least 1 MiB), before a compaction starts.
	// Default 1. Higher writes fewer snapshots and makes restarts longer:
	// a start replays the snapshot and the whole log.
	CompactRatio float64
}

func (o Options) withDefaults() Options {
	if o.Ephemeral == nil {
		o.Ephemeral = func(string) bool { return false }
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CompactRatio <= 0 {
		o.CompactRatio = 1
	}
	return o
}

// Store is a running embedded Redis.
type Store struct {
	dir  string
	opts Options
	lock *os.File
	mr   *miniredis.Miniredis
	rdb  *redis.Client

	// writeMu is held by every command that may write, from before it is
	// sent until what it changed is in the log (capture.go).
	writeMu   sync.Mutex
	writeConn *conn // reads back what a write changed; under writeMu
	dirty     dirty
	exp       *expiries
	wal       *wal
	gen       uint64 // generation of the log appended to; under writeMu

	compactMu   sync.Mutex // one compaction at a time
	compactConn *conn
	compactNow  chan struct{}
	snapSize    atomic.Int64 // bytes of the last snapshot
	compactions atomic.Int64

	stop    chan struct{}
	bg      sync.WaitGroup
	closing sync.Once
	closed  error
}

// Open locks dir (creating it, mode 0700, when missing), loads what it
// holds and starts the embedded Redis. A second process on the same dir
// gets [ErrLocked]. A write cut short by a crash at the end of the log is
// dropped with a warning; damage anywhere else is an error naming the file.
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir:        dir,
		opts:       opts.withDefaults(),
		lock:       lock,
		mr:         miniredis.NewMiniRedis(),
		exp:        newExpiries(),
		compactNow: make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	// Dialling starts the engine without a listener: nothing outside this
	// process can reach it.
	c, err := s.mr.Dial()
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("starting embedded redis: %w", err)
	}
	c.Close()
	srv := s.mr.Server()
	s.writeConn, s.compactConn = newConn(srv), newConn(srv)
	if err := s.recover(); err != nil {
		s.mr.Close()
		lock.Close()
		return nil, err
	}
	srv.SetPreHook(s.preHook)
	s.rdb = redis.NewClient(&redis.Options{
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			client, server := memPipe()
			srv.ServeConn(server)
			return client, nil
		},
		// The engine always answers: no deadline, so that a reply is never
		// abandoned while its command runs.
		ReadTimeout:  -1,
		WriteTimeout: -1,
	})
	s.rdb.AddHook(persistHook{s})
	// Keys that expired while keygate was down go now, as logged deletes.
	if err := s.expireDue(); err != nil {
		s.Close()
		return nil, err
	}
	s.bg.Add(2)
	go s.compactLoop()
	go s.expireLoop()
	return s, nil
}

// Client returns the client whose writes are persisted: the only way in.
func (s *Store) Client() *redis.Client { return s.rdb }

// Close stops the embedded Redis and releases the directory. Every write
// that returned is already on disk.
func (s *Store) Close() error {
	s.closing.Do(func() {
		close(s.stop)
		s.bg.Wait()
		// A compaction in progress sees stop and gives up; its files are
		// removed, or left for the next start to remove.
		s.compactMu.Lock()
		defer s.compactMu.Unlock()
		s.rdb.Close()
		s.mr.Close()
		if err := s.wal.close(); err != nil {
			s.closed = fmt.Errorf("closing the log: %w", err)
		}
		s.lock.Close()
	})
	return s.closed
}

func (s *Store) now() time.Time { return s.opts.Now() }

// committed runs after a write is on disk: it asks for a compaction when the
// log has outgrown the snapshot.
func (s *Store) committed() {
	if s.shouldCompact() {
		select {
		case s.compactNow <- struct{}{}:
		default:
		}
	}
}

// Stats are figures for tests and benchmarks.
type Stats struct {
	LogBytes      int64 // bytes in the current log
	SnapshotBytes int64 // bytes in the last snapshot
	Written       int64 // bytes written to logs since Open
	Compactions   int64 // snapshots written since Open
}

// Stats returns the store's figures.
func (s *Store) Stats() Stats {
	s.wal.mu.Lock()
	written, size := s.wal.written, s.wal.size
	s.wal.mu.Unlock()
	return Stats{LogBytes: size, SnapshotBytes: s.snapSize.Load(), Written: written, Compactions: s.compactions.Load()}
}
