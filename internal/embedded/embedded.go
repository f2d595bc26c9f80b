// Package embedded runs the store a new user gets with no Redis: an
// in-process miniredis on a loopback port whose contents are saved to a
// directory after every write and loaded at start.
//
//	e, err := embedded.Open("./keygate-data")
//	rdb := e.Client() // a go-redis client on it
//	defer e.Close()
//
// It is for one instance: two processes on one data directory overwrite each
// other's snapshots.
package embedded

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// SnapshotFile is the name of the snapshot in the data directory.
const SnapshotFile = "keygate.snapshot"

// Store is a running embedded Redis.
type Store struct {
	dir string
	mr  *miniredis.Miniredis
	rdb *redis.Client

	mu   sync.Mutex // serialises snapshots
	last []byte     // the bytes last written, to skip identical snapshots
}

// Open loads the snapshot in dir (creating dir, mode 0700, when missing) and
// starts the embedded Redis on a free loopback port.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("starting embedded redis: %w", err)
	}
	s := &Store{dir: dir, mr: mr}
	if err := s.load(); err != nil {
		mr.Close()
		return nil, err
	}
	s.rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
	s.rdb.AddHook(persistHook{s})
	return s, nil
}

// Client returns the client whose writes are persisted. Writes made through
// other clients are saved with the next write made through this one, or at
// Close.
func (s *Store) Client() *redis.Client { return s.rdb }

// Close saves a last snapshot and stops the embedded Redis.
func (s *Store) Close() error {
	err := s.Save()
	s.rdb.Close()
	s.mr.Close()
	return err
}

// snapshot is the saved form. Values are Go strings, which gob keeps byte
// for byte (digests are binary).
type snapshot struct {
	Strings map[string]string
	Hashes  map[string]map[string]string
	ZSets   map[string]map[string]float64
	Sets    map[string][]string
	Lists   map[string][]string
}

// Save writes the current contents atomically: to a temporary file that is
// synced and then renamed over the snapshot, so that a crash at any point
// leaves either the previous snapshot or the new one. Keys with a TTL are
// transient (acknowledgements, heartbeats) and are not saved.
func (s *Store) Save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.capture()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(snap); err != nil {
		return fmt.Errorf("encoding snapshot: %w", err)
	}
	if bytes.Equal(buf.Bytes(), s.last) {
		return nil
	}
	if err := writeAtomic(filepath.Join(s.dir, SnapshotFile), buf.Bytes()); err != nil {
		return err
	}
	s.last = buf.Bytes()
	return nil
}

func (s *Store) capture() snapshot {
	snap := snapshot{
		Strings: map[string]string{},
		Hashes:  map[string]map[string]string{},
		ZSets:   map[string]map[string]float64{},
		Sets:    map[string][]string{},
		Lists:   map[string][]string{},
	}
	for _, k := range s.mr.Keys() {
		if s.mr.TTL(k) > 0 {
			continue
		}
		switch s.mr.Type(k) {
		case "string":
			if v, err := s.mr.Get(k); err == nil {
				snap.Strings[k] = v
			}
		case "hash":
			fields, _ := s.mr.HKeys(k)
			h := make(map[string]string, len(fields))
			for _, f := range fields {
				h[f] = s.mr.HGet(k, f)
			}
			snap.Hashes[k] = h
		case "zset":
			members, _ := s.mr.ZMembers(k)
			z := make(map[string]float64, len(members))
			for _, m := range members {
				z[m], _ = s.mr.ZScore(k, m)
			}
			snap.ZSets[k] = z
		case "set":
			snap.Sets[k], _ = s.mr.Members(k)
		case "list":
			snap.Lists[k], _ = s.mr.List(k)
		}
	}
	return snap
}

func (s *Store) load() error {
	b, err := os.ReadFile(filepath.Join(s.dir, SnapshotFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	var snap snapshot
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&snap); err != nil {
		return fmt.Errorf("decoding snapshot %s: %w", filepath.Join(s.dir, SnapshotFile), err)
	}
	for k, v := range snap.Strings {
		s.mr.Set(k, v)
	}
	for k, h := range snap.Hashes {
		for f, v := range h {
			s.mr.HSet(k, f, v)
		}
	}
	for k, z := range snap.ZSets {
		for m, score := range z {
			s.mr.ZAdd(k, score, m)
		}
	}
	for k, members := range snap.Sets {
		s.mr.SAdd(k, members...)
	}
	for k, items := range snap.Lists {
		s.mr.Push(k, items...)
	}
	s.last = b
	return nil
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing snapshot: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing snapshot: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing snapshot: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// persistHook saves a snapshot after every command that may write, before
// the command's caller sees its reply: once a write has returned, it
// survives a crash.
type persistHook struct{ s *Store }

func (h persistHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h persistHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if mayWrite(cmd.Name()) {
			if serr := h.s.Save(); serr != nil && err == nil {
				cmd.SetErr(serr)
				return serr
			}
		}
		return err
	}
}

func (h persistHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if mayWrite(cmd.Name()) {
				if serr := h.s.Save(); serr != nil && err == nil {
					return serr
				}
				break
			}
		}
		return err
	}
}

// readOnly lists the commands that never change data.
var readOnly = map[string]bool{
	"get": true, "mget": true, "exists": true, "type": true, "ttl": true, "pttl": true,
	"keys": true, "scan": true, "dbsize": true,
	"hget": true, "hgetall": true, "hmget": true, "hexists": true, "hlen": true, "hkeys": true, "hscan": true,
	"zcard": true, "zscore": true, "zmscore": true, "zrange": true, "zrevrange": true,
	"zrangebyscore": true, "zrevrangebyscore": true, "zcount": true, "zrank": true, "zrevrank": true,
	"smembers": true, "sismember": true, "scard": true, "llen": true, "lrange": true, "lindex": true,
	"ping": true, "echo": true, "hello": true, "info": true, "time": true, "client": true,
	"publish": true, "subscribe": true, "unsubscribe": true, "psubscribe": true, "punsubscribe": true, "pubsub": true,
	"script": true,
}

func mayWrite(name string) bool { return !readOnly[name] }
