package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/internal/embedded"
	"github.com/keygate/keygate/keystore"
)

// embeddedStore measures the embedded store as keygate serve runs it (a
// store and a caching verifier on it): creates at 1k and at 100k keys,
// what an idle process writes, how long a restart takes and what a key
// costs in memory.
func embeddedStore(ctx context.Context, e *env) ([]row, error) {
	ephemeral := func(k string) bool { return keystore.IsEphemeral("keygate", k) }
	opts := embedded.Options{Ephemeral: ephemeral}
	n := e.cfg.keys
	const sample = 1000
	subject := func(i int) string { return subjectOf(i / 100) }

	// Two stores side by side, one with 1,000 keys and one with n, so that
	// the creates timed on both meet the same disk.
	small, err := openServing(ctx, filepath.Join(e.dir, "embedded-1k"), opts)
	if err != nil {
		return nil, err
	}
	defer small.close()
	big, err := openServing(ctx, filepath.Join(e.dir, "embedded"), opts)
	if err != nil {
		return nil, err
	}
	defer func() { big.close() }()
	if err := small.fill(ctx, 1000, subject); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := big.fill(ctx, n, subject); err != nil {
		return nil, err
	}
	progress("embedded: %d keys created in %s", n, time.Since(t0).Round(100*time.Millisecond))
	// No compaction pending on either while the creates are timed.
	for _, s := range []*serving{small, big} {
		if err := s.st.Compact(); err != nil {
			return nil, err
		}
	}
	var p50s, p99s, p50Small, p99Small, p50Big, p99Big []float64
	for range e.cfg.runs {
		var a, b []time.Duration
		for range sample {
			d, err := small.timeCreate(ctx, subject)
			if err != nil {
				return nil, err
			}
			a = append(a, d)
			if d, err = big.timeCreate(ctx, subject); err != nil {
				return nil, err
			}
			b = append(b, d)
		}
		slices.Sort(a)
		slices.Sort(b)
		p50Small, p99Small = append(p50Small, percentile(a, 50).Seconds()), append(p99Small, percentile(a, 99).Seconds())
		p50Big, p99Big = append(p50Big, percentile(b, 50).Seconds()), append(p99Big, percentile(b, 99).Seconds())
		p50s = append(p50s, percentile(b, 50).Seconds()/percentile(a, 50).Seconds())
		p99s = append(p99s, percentile(b, 99).Seconds()/percentile(a, 99).Seconds())
	}
	p50Ratio, p99Ratio := median(p50s), median(p99s)

	// And while a compaction runs, as one does every time the log has
	// grown as large as the snapshot.
	compacted := make(chan error, 1)
	go func() { compacted <- big.st.Compact() }()
	var during []time.Duration
	var compactErr error
	for done := false; !done; {
		select {
		case compactErr = <-compacted:
			done = true
			continue
		default:
		}
		d, err := big.timeCreate(ctx, subject)
		if err != nil {
			return nil, err
		}
		during = append(during, d)
	}
	if compactErr != nil {
		return nil, compactErr
	}
	slices.Sort(during)
	small.close()
	st, dir := big.st, big.dir

	// Idle: the verifier's heartbeats and the last-used flush run; nobody
	// calls. The compaction above is done, and no other is due.
	const idle = 10 * time.Second
	ioBefore, err := processWriteBytes()
	if err != nil {
		return nil, err
	}
	statsBefore, filesBefore, cpuBefore := st.Stats(), dirBytes(dir), cpuTime()
	time.Sleep(idle)
	ioAfter, _ := processWriteBytes()
	statsAfter, filesAfter, cpuAfter := st.Stats(), dirBytes(dir), cpuTime()
	idleIO := ioAfter - ioBefore
	idleLog := statsAfter.Written - statsBefore.Written
	idleCPU := (cpuAfter - cpuBefore).Seconds() / idle.Seconds()

	// Restart after a stop, and the memory the data set takes.
	created := big.created
	big.close()
	heapBefore, rssBefore := memory()
	t0 = time.Now()
	if st, err = embedded.Open(dir, opts); err != nil {
		return nil, err
	}
	restartClean := time.Since(t0)
	heapAfter, rssAfter := memory()
	files := st.Stats()
	loaded := created
	heapPerKey := float64(heapAfter-heapBefore) / float64(loaded)
	rssPerKey := float64(rssAfter-rssBefore) / float64(loaded)
	st.Close()
	big = &serving{}

	// Restart at the worst: the log as large as the snapshot, when a
	// compaction would start. Built as a snapshot of n/2 keys and a log of
	// the n/2 creates after it (a log of creates is a little larger than
	// the snapshot of as many keys, so a little worse than the worst).
	worstDir := filepath.Join(e.dir, "embedded-worst")
	w, err := openServing(ctx, worstDir, embedded.Options{Ephemeral: ephemeral, CompactRatio: 100})
	if err != nil {
		return nil, err
	}
	if err := w.fill(ctx, n/2, subject); err != nil {
		w.close()
		return nil, err
	}
	if err := w.st.Compact(); err != nil {
		w.close()
		return nil, err
	}
	if err := w.fill(ctx, n, subject); err != nil {
		w.close()
		return nil, err
	}
	worst := w.st.Stats()
	w.close()
	t0 = time.Now()
	if st, err = embedded.Open(worstDir, opts); err != nil {
		return nil, err
	}
	restartWorst := time.Since(t0)
	st.Close()

	k := func(n int) string { return fmt.Sprintf("%dk", n/1000) }
	return []row{{
		measure: fmt.Sprintf("embedded store: create at 1k and at %s keys", k(n)),
		keygate: fmt.Sprintf("1k: p50 %s, p99 %s; %s: p50 %s, p99 %s; %s while a compaction runs: p50 %s, p99 %s (%d creates)",
			dur(median(p50Small)), dur(median(p99Small)), k(n), dur(median(p50Big)), dur(median(p99Big)),
			k(n), dur(percentile(during, 50).Seconds()), dur(percentile(during, 99).Seconds()), len(during)),
		baseline: "itself at 1k keys",
		compare:  fmt.Sprintf("p50 %.2f×, p99 %.2f×", p50Ratio, p99Ratio),
		goal:     "≤ 1.5×",
		verdict:  verdict(p50Ratio <= 1.5 && p99Ratio <= 1.5),
		note: fmt.Sprintf("`Store.Create`, one call at a time, on two embedded stores open side by side, each with a caching verifier "+
			"running (as `keygate serve` has): one holding 1,000 keys, one %d (created by 32 goroutines; 100 keys per subject), "+
			"the calls alternating between them, %d on each per run; medians of %d runs, and the median of the runs' ratios. Then "+
			"on the large store while a compaction runs (every call until it ends). Each create is two writes (the index entries, "+
			"then the record), each on disk (fsync) before it returns; this disk's own fsync has a p99 of a few milliseconds.",
			n, sample, e.cfg.runs),
	}, {
		measure:  fmt.Sprintf("embedded store: bytes written in %s idle, %s keys", idle, k(n)),
		keygate:  fmt.Sprintf("%d bytes (/proc/self/io write_bytes), %d to the log, data directory %+d bytes; %.1f%% of a core", idleIO, idleLog, filesAfter-filesBefore, 100*idleCPU),
		baseline: "—",
		goal:     "0",
		verdict:  verdict(idleIO == 0 && idleLog == 0),
		note: fmt.Sprintf("the process above, with its verifier's heartbeats (every 500ms) and the last-used flush (every 1s) running and no "+
			"call, for %s, after the compaction; write_bytes counts every byte the whole process sent towards the disk.", idle),
	}, {
		measure: fmt.Sprintf("embedded store: restart with %s keys", k(n)),
		keygate: fmt.Sprintf("%s after a stop (snapshot %s, log %s); %s at the worst (snapshot %s, log %s)",
			dur(restartClean.Seconds()), mb(files.SnapshotBytes), mb(files.LogBytes),
			dur(restartWorst.Seconds()), mb(worst.SnapshotBytes), mb(worst.LogBytes)),
		baseline: "—",
		goal:     "≤ 2 s",
		verdict:  verdict(restartClean <= 2*time.Second && restartWorst <= 2*time.Second),
		note: fmt.Sprintf("`embedded.Open` until it returns, ready to serve: loading the snapshot and replaying the log. A compaction "+
			"starts when the log outgrows the snapshot, so the worst start replays a log as large as the snapshot: here a snapshot "+
			"of %d keys and a log of the %d creates after it.", n/2, n-n/2),
	}, {
		measure:  fmt.Sprintf("embedded store: memory per key, %s keys", k(n)),
		keygate:  fmt.Sprintf("%.0f bytes of Go heap (resident set grew %.0f bytes per key)", heapPerKey, rssPerKey),
		baseline: "—",
		goal:     "report",
		verdict:  "report",
		note: fmt.Sprintf("live heap (after a GC) and VmRSS before and after `embedded.Open` loads the %d keys of the first rows, divided by "+
			"their number: the engine's maps of records and indexes, and the store's own tables.", loaded),
	}}, nil
}

// serving is an embedded store as keygate serve runs it: a store and a
// caching verifier on it.
type serving struct {
	dir     string
	st      *embedded.Store
	store   *keystore.Store
	v       *keystore.Verifier
	created int
}

func openServing(ctx context.Context, dir string, opts embedded.Options) (*serving, error) {
	s := &serving{dir: dir}
	var err error
	if s.st, err = embedded.Open(dir, opts); err != nil {
		return nil, err
	}
	if s.store, err = keystore.New(s.st.Client(), keystore.Options{}); err == nil {
		s.v, err = keystore.NewVerifier(s.store, keystore.VerifierOptions{})
	}
	if err == nil {
		err = waitReady(ctx, s.v)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *serving) fill(ctx context.Context, to int, subject func(int) string) error {
	_, err := createKeysFrom(ctx, s.store, s.created, to, 32, subject)
	s.created = to
	return err
}

func (s *serving) timeCreate(ctx context.Context, subject func(int) string) (time.Duration, error) {
	t0 := time.Now()
	_, err := s.store.Create(ctx, keyParams(s.created, subject(s.created)))
	s.created++
	return time.Since(t0), err
}

func (s *serving) close() {
	if s.v != nil {
		s.v.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.st != nil {
		s.st.Close()
	}
	*s = serving{}
}

// createKeysFrom creates the keys numbered from to to.
func createKeysFrom(ctx context.Context, s *keystore.Store, from, to, conc int, subject func(i int) string) ([]*keystore.APIKey, error) {
	return createKeys(ctx, s, to-from, conc, func(i int) string { return subject(from + i) })
}

// processWriteBytes is write_bytes of /proc/self/io: the bytes this process
// caused to be sent to the storage layer.
func processWriteBytes() (int64, error) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no write_bytes in /proc/self/io")
}

func dirBytes(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// memory returns the live heap after a GC, and VmRSS, in bytes.
func memory() (heap, rss int64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rss = kb * 1024
		}
	}
	return int64(ms.HeapAlloc), rss
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
