package embedded

import (
	"bufio"
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The data directory holds generations: store-N.snap, the whole data set
// when generation N began, and store-N.log, every change since. A start
// loads the newest snapshot and replays the logs of its generation and the
// later ones, in order.
//
// Compaction begins generation N+1 while writes go on:
//
//  1. Under the write lock, the rest of log N is synced and store-N+1.log
//     created: every change from now on goes there.
//  2. Every durable key is read, one command each, into store-N+1.snap.tmp,
//     which is synced. Keys may change meanwhile; each is read as it was at
//     some moment after step 1, and log N+1 holds every change after that
//     moment. Records say what a key is, not what to do to it, so replaying
//     log N+1 over the snapshot ends where the data set ended.
//  3. Everything appended to log N+1 before the end of step 2 is synced, so
//     that the snapshot holds nothing the log could lose.
//  4. The snapshot is renamed into place and the directory synced: from
//     now on a start uses it. Generation N's files are removed.
//
// A crash before step 4 leaves generation N's snapshot and the logs N and
// N+1, which a start replays in turn; a crash after it leaves generation
// N+1 complete.

const (
	lockFile = "keygate.lock"
	// legacySnapshot is the file of keygate's first embedded store: the
	// whole data set, gob-encoded. A start migrates it.
	legacySnapshot = "keygate.snapshot"
	// snapshotBatch is how many bytes of records a snapshot batch holds.
	snapshotBatch = 1 << 20
	// minCompactLog is the smallest log that compaction replaces.
	minCompactLog = 1 << 20
)

func snapName(gen uint64) string { return fmt.Sprintf("store-%08d.snap", gen) }
func logName(gen uint64) string  { return fmt.Sprintf("store-%08d.log", gen) }

// generations lists the snapshots and logs in dir, and removes temporary
// files left by a crash.
func generations(dir string) (snaps, logs []uint64, legacy bool, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, false, err
	}
	for _, e := range entries {
		name := e.Name()
		if name == legacySnapshot {
			legacy = true
			continue
		}
		if strings.HasSuffix(name, ".tmp") && strings.HasPrefix(name, "store-") {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		var gen uint64
		if _, err := fmt.Sscanf(name, "store-%08d.snap", &gen); err == nil && name == snapName(gen) {
			snaps = append(snaps, gen)
		} else if _, err := fmt.Sscanf(name, "store-%08d.log", &gen); err == nil && name == logName(gen) {
			logs = append(logs, gen)
		}
	}
	slices.Sort(snaps)
	slices.Sort(logs)
	return snaps, logs, legacy, nil
}

// recover loads the data directory into the engine and opens the log to
// append to.
func (s *Store) recover() error {
	snaps, logs, legacy, err := generations(s.dir)
	if err != nil {
		return fmt.Errorf("reading the data directory: %w", err)
	}
	if len(snaps) == 0 && len(logs) == 0 {
		if legacy {
			return s.migrate()
		}
		return s.startLog(1, nil)
	}
	if legacy {
		s.opts.Logger.Warn("embedded store: ignoring keygate.snapshot, an older format: the store files in the data directory are newer; delete it once you no longer need it",
			"data_dir", s.dir)
	}
	a := &applier{c: s.writeConn, exp: s.exp, setExpiry: s.setExpiry, fresh: true}
	var snapGen uint64
	if len(snaps) > 0 {
		snapGen = snaps[len(snaps)-1]
		if err := s.loadSnapshot(snapGen, a); err != nil {
			return err
		}
	}
	a.fresh = false
	gen := snapGen
	replay := slices.DeleteFunc(slices.Clone(logs), func(g uint64) bool { return g < snapGen })
	var last *os.File
	var lastSize int64
	for i, g := range replay {
		f, size, err := s.replayLog(g, a, i == len(replay)-1)
		if err != nil {
			return err
		}
		if i < len(replay)-1 {
			f.Close()
			continue
		}
		last, lastSize, gen = f, size, g
	}
	// Files older than the snapshot are left by a crash after step 4.
	for _, g := range snaps {
		if g < snapGen {
			os.Remove(filepath.Join(s.dir, snapName(g)))
		}
	}
	for _, g := range logs {
		if g < snapGen {
			os.Remove(filepath.Join(s.dir, logName(g)))
		}
	}
	if last == nil {
		return s.startLog(max(gen, 1), nil)
	}
	s.gen = gen
	s.wal = newWAL(last, lastSize)
	return nil
}

// startLog creates the log of generation gen and appends to it from now
// on. With a log already open, it first makes that one's records durable,
// so that only the last log can ever end in a torn write.
func (s *Store) startLog(gen uint64, old *wal) error {
	if old != nil {
		if err := old.flush(); err != nil {
			return err
		}
	}
	path := filepath.Join(s.dir, logName(gen))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.Write(header(logMagic, gen))
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = syncDir(s.dir)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("creating %s: %w", logName(gen), err)
	}
	s.gen = gen
	if old == nil {
		s.wal = newWAL(f, headerSize)
		return nil
	}
	prev, err := old.rotate(f, headerSize)
	if err != nil {
		f.Close()
		return err
	}
	return prev.Close()
}

func (s *Store) loadSnapshot(gen uint64, a *applier) error {
	name := snapName(gen)
	f, err := os.Open(filepath.Join(s.dir, name))
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	hdr := make([]byte, headerSize)
	if _, err := f.ReadAt(hdr, 0); err != nil || !checkHeader(hdr, snapMagic, gen) {
		return fmt.Errorf("%s is damaged: it does not start as a keygate snapshot", name)
	}
	res, err := scanBatches(f, st.Size(), a.apply)
	if err == nil && (res.torn || !a.ended) {
		err = fmt.Errorf("damaged at byte %d: the snapshot is incomplete", res.good)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	a.ended = false
	s.snapSize.Store(st.Size())
	return nil
}

// replayLog applies the log of generation gen. In the last log a torn batch
// at the end (a write a crash cut short, never acknowledged) is cut off
// with a warning; anywhere else damage stops the start.
func (s *Store) replayLog(gen uint64, a *applier, last bool) (*os.File, int64, error) {
	name := logName(gen)
	f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_RDWR, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("opening %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("reading %s: %w", name, err)
	}
	hdr := make([]byte, headerSize)
	n, _ := f.ReadAt(hdr, 0)
	if !checkHeader(hdr[:n], logMagic, gen) {
		// A log is created with its header synced before anything is
		// appended: a bad header is a crash during its creation.
		if !last || st.Size() > headerSize {
			f.Close()
			return nil, 0, fmt.Errorf("%s is damaged: it does not start as a keygate log", name)
		}
		f.Close()
		if err := s.startLog(gen, nil); err != nil {
			return nil, 0, err
		}
		return s.wal.f, headerSize, nil
	}
	res, err := scanBatches(f, st.Size(), a.apply)
	if err == nil && res.torn && !last {
		err = fmt.Errorf("damaged at byte %d, and a later log exists: not a torn write", res.good)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w (to start from what precedes the damage, truncate the file to that size)", name, err)
	}
	if res.torn {
		s.opts.Logger.Warn("embedded store: dropped an incomplete write at the end of the log, left by a crash; its command had not been answered",
			"file", name, "offset", res.good, "bytes", st.Size()-res.good)
		err := f.Truncate(res.good)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("truncating %s: %w", name, err)
		}
	}
	if _, err := f.Seek(res.good, 0); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, res.good, nil
}

// Compact writes a snapshot of the data set and starts a new log, so that
// the next start replays less. It runs by itself, in the background, when
// the log has grown larger than the last snapshot; writes go on meanwhile.
func (s *Store) Compact() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.writeMu.Lock()
	err := s.startLog(s.gen+1, s.wal)
	gen := s.gen
	s.writeMu.Unlock()
	if err != nil {
		return s.persistError(err)
	}
	if err := s.writeSnapshot(gen, s.compactConn); err != nil {
		return fmt.Errorf("embedded store: compacting: %w", err)
	}
	for g := gen - 1; g > 0; g-- {
		errSnap := os.Remove(filepath.Join(s.dir, snapName(g)))
		errLog := os.Remove(filepath.Join(s.dir, logName(g)))
		if errors.Is(errSnap, fs.ErrNotExist) && errors.Is(errLog, fs.ErrNotExist) {
			break
		}
	}
	syncDir(s.dir)
	return nil
}

// writeSnapshot writes every durable key into the snapshot of generation
// gen (steps 2 to 4 above).
func (s *Store) writeSnapshot(gen uint64, c *conn) error {
	name := snapName(gen)
	path := filepath.Join(s.dir, name)
	tmp, err := os.OpenFile(path+".tmp", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // nothing to remove after the rename
	defer tmp.Close()
	keys := s.mr.Keys() // sorted; KEYS * would also match each against "*"
	w := bufio.NewWriterSize(tmp, snapshotBatch+batchHeader)
	w.Write(header(snapMagic, gen))
	var batch []byte
	count := 0
	for _, k := range keys {
		if !s.durable(k) {
			continue
		}
		select {
		case <-s.stop:
			return errClosed
		default:
		}
		v, ok, err := s.read(c, k)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if x, ok := s.exp.get(k); ok {
			v.expireAt = x.at
		}
		batch = appendPut(batch, k, v)
		count++
		if compactPause != nil && count%50 == 0 {
			compactPause()
		}
		if len(batch) >= snapshotBatch {
			w.Write(appendBatch(nil, batch))
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		w.Write(appendBatch(nil, batch))
	}
	w.Write(appendBatch(nil, appendEnd(nil, count)))
	if err := w.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", name, err)
	}
	st, err := tmp.Stat()
	if err != nil {
		return err
	}
	if s.wal != nil {
		s.writeMu.Lock()
		seq := s.wal.last()
		s.writeMu.Unlock()
		if err := s.wal.commit(seq); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("installing %s: %w", name, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("installing %s: %w", name, err)
	}
	s.snapSize.Store(st.Size())
	s.compactions.Add(1)
	return nil
}

// compactPause, set by tests, slows compaction down: it runs every 50 keys.
var compactPause func()

// shouldCompact reports whether the log has outgrown the snapshot.
func (s *Store) shouldCompact() bool {
	return s.wal.fileSize() > max(int64(float64(s.snapSize.Load())*s.opts.CompactRatio), minCompactLog)
}

// compactLoop compacts when asked, one compaction at a time.
func (s *Store) compactLoop() {
	defer s.bg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.compactNow:
		}
		if !s.shouldCompact() {
			continue
		}
		t0 := time.Now()
		if err := s.Compact(); err != nil {
			if !errors.Is(err, errClosed) {
				s.opts.Logger.Error("embedded store: compaction failed; the log keeps growing until the next try", "err", err)
			}
			continue
		}
		s.opts.Logger.Debug("embedded store: compacted", "took", time.Since(t0), "snapshot_bytes", s.snapSize.Load())
	}
}

// legacy is the gob-encoded form of keygate's first embedded store.
type legacy struct {
	Strings map[string]string
	Hashes  map[string]map[string]string
	ZSets   map[string]map[string]float64
	Sets    map[string][]string
	Lists   map[string][]string
}

// migrate loads keygate.snapshot, writes it as generation 1, and removes
// it. A crash before the new snapshot is in place leaves the old file,
// which the next start migrates again.
func (s *Store) migrate() error {
	path := filepath.Join(s.dir, legacySnapshot)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", legacySnapshot, err)
	}
	var snap legacy
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&snap); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	c := s.writeConn
	for k, v := range snap.Strings {
		err = errors.Join(err, c.ok("SET", k, v))
	}
	for k, h := range snap.Hashes {
		args := []string{"HSET", k}
		for f, v := range h {
			args = append(args, f, v)
		}
		err = errors.Join(err, c.ok(args...))
	}
	for k, z := range snap.ZSets {
		args := []string{"ZADD", k}
		for m, score := range z {
			args = append(args, formatScore(score), m)
		}
		err = errors.Join(err, c.ok(args...))
	}
	for k, members := range snap.Sets {
		err = errors.Join(err, c.ok(append([]string{"SADD", k}, members...)...))
	}
	for k, items := range snap.Lists {
		err = errors.Join(err, c.ok(append([]string{"RPUSH", k}, items...)...))
	}
	if err != nil {
		return fmt.Errorf("loading %s: %w", legacySnapshot, err)
	}
	if err := s.writeSnapshot(1, c); err != nil {
		return err
	}
	if err := s.startLog(1, nil); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	s.opts.Logger.Info("embedded store: migrated keygate.snapshot to the log format", "data_dir", s.dir,
		"keys", strconv.Itoa(len(snap.Strings)+len(snap.Hashes)+len(snap.ZSets)+len(snap.Sets)+len(snap.Lists)))
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
