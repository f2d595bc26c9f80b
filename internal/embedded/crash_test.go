package embedded

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore"
)

// The tests here run a writer in a child process (this test binary, run
// again with KEYGATE_EMBEDDED_HELPER set), kill it with SIGKILL at a random
// moment, and check what the next start finds. The child prints a line for
// each call once it has returned: "C id secret" for a key created, "R id"
// for a key revoked with the reason "why-<id>".

// TestMain runs the tests, or, in a child, the writer that a test kills.
func TestMain(m *testing.M) {
	if spec := os.Getenv("KEYGATE_EMBEDDED_HELPER"); spec != "" {
		mode, dir, _ := strings.Cut(spec, ":")
		os.Exit(runChild(mode, dir))
	}
	os.Exit(m.Run())
}

// acked is what a child reported done.
type acked struct {
	secrets map[string]string // id → secret
	revoked map[string]bool
	lines   int
}

func newAcked() *acked { return &acked{secrets: map[string]string{}, revoked: map[string]bool{}} }

func (a *acked) add(line string) {
	f := strings.Fields(line)
	switch {
	case len(f) == 3 && f[0] == "C":
		a.secrets[f[1]] = f[2]
		a.lines++
	case len(f) == 2 && f[0] == "R":
		a.revoked[f[1]] = true
		a.lines++
	}
}

// child starts the writer of mode on dir and returns its output.
func child(t *testing.T, mode, dir string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KEYGATE_EMBEDDED_HELPER="+mode+":"+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(out)
}

// kill kills the child and records the lines it printed before it died.
func kill(t *testing.T, cmd *exec.Cmd, sc *bufio.Scanner, a *acked) {
	t.Helper()
	cmd.Process.Kill() // SIGKILL: no deferred Close, nothing flushed
	for sc.Scan() {
		a.add(sc.Text())
	}
	cmd.Wait()
}

// check opens dir and checks that every acknowledged change is there, and
// that no change is there by half: a revoked record has its reason, and a
// record has its index entries (written before it).
func check(t *testing.T, round int, dir string, a *acked) {
	t.Helper()
	e, err := Open(dir, Options{Ephemeral: ephemeral, Logger: discard()})
	if err != nil {
		t.Fatalf("round %d: the data after a kill does not load: %v", round, err)
	}
	defer e.Close()
	ctx := context.Background()
	s, err := keystore.New(e.Client(), keystore.Options{LastUsedFlush: -1})
	must(t, err)
	defer s.Close()
	for id, secret := range a.secrets {
		k, err := s.Verify(ctx, secret)
		switch {
		case a.revoked[id]:
			if !errors.Is(err, keystore.ErrRevoked) || k.RevocationReason == nil || *k.RevocationReason != "why-"+id {
				t.Fatalf("round %d: key %s, revoked before the kill: %v", round, id, err)
			}
		case err != nil && !errors.Is(err, keystore.ErrRevoked):
			t.Fatalf("round %d: key %s, created before the kill: %v", round, id, err)
		}
	}
	rdb := e.Client()
	records := rdb.Keys(ctx, ns+":key:*").Val()
	for _, key := range records {
		h := rdb.HGetAll(ctx, key).Val()
		id := strings.TrimPrefix(key, ns+":key:")
		if (h["r"] == "1") != (h["rr"] == "why-"+id) {
			t.Fatalf("round %d: record %s is half revoked: %v", round, id, h)
		}
		if h["n"] == "" || h["s"] == "" || len(h["h"]) != 32 || h["ca"] == "" {
			t.Fatalf("round %d: record %s is incomplete: %q", round, id, h)
		}
		// Listed in both scopes, or journaled for a listing to repair
		// (keystore/index.go).
		listed := func(scope string) bool {
			return rdb.ZScore(ctx, scope+"valid", id).Err() == nil || rdb.ZScore(ctx, scope+"invalid", id).Err() == nil
		}
		if !(listed(ns+":sub:{"+h["s"]+"}:") && listed(ns+":{all}:")) && rdb.ZScore(ctx, ns+":{all}:changing", id).Err() != nil {
			t.Fatalf("round %d: record %s is there without its index entries or a journal entry", round, id)
		}
	}
	if len(records) < len(a.secrets) {
		t.Fatalf("round %d: %d records, %d keys acknowledged", round, len(records), len(a.secrets))
	}
}

// TestKillDuringWrites kills, 20 times, a process that creates, revokes and
// verifies keys from four goroutines (with a caching verifier, whose
// heartbeats and acknowledgements are writes too).
func TestKillDuringWrites(t *testing.T) {
	rng := seeded(t)
	dir := t.TempDir()
	a := newAcked()
	for round := range 20 {
		cmd, sc := child(t, "writes", dir)
		// Kill after a random number of acknowledged calls: at a random
		// moment of the log's write and sync cycle.
		killAfter := a.lines + 1 + rng.IntN(150)
		for a.lines < killAfter && sc.Scan() {
			a.add(sc.Text())
		}
		if a.lines < killAfter {
			t.Fatalf("round %d: the writer stopped after %d calls", round, a.lines)
		}
		kill(t, cmd, sc, a)
		check(t, round, dir, a)
	}
	t.Logf("%d keys created and %d revoked, all there after 20 kills", len(a.secrets), len(a.revoked))
}

// TestKillDuringCompaction kills a process while it compacts, writes going
// on: 10 times, each a random number of writes into a compaction.
func TestKillDuringCompaction(t *testing.T) {
	rng := seeded(t)
	dir := t.TempDir()
	a := newAcked()
	inCompaction := 0
	for round := range 10 {
		cmd, sc := child(t, "compact", dir)
		started, extra := false, rng.IntN(10)
		for sc.Scan() {
			line := sc.Text()
			a.add(line)
			if line == "K" {
				started = true
			}
			if started && strings.HasPrefix(line, "C ") {
				if extra--; extra < 0 {
					break
				}
			}
		}
		kill(t, cmd, sc, a)
		if !started {
			t.Fatalf("round %d: the child never compacted", round)
		}
		if tmp, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(tmp) > 0 {
			inCompaction++
		}
		check(t, round, dir, a)
	}
	t.Logf("%d of 10 kills left a snapshot half written; %d keys there after each", inCompaction, len(a.secrets))
	if inCompaction == 0 {
		t.Error("no kill landed in a compaction: the test proved nothing")
	}
}

// runChild is the writer a test kills.
func runChild(mode, dir string) int {
	e, err := Open(dir, Options{Ephemeral: ephemeral, Logger: discard()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		return 1
	}
	ctx := context.Background()
	s, err := keystore.New(e.Client(), keystore.Options{LastUsedFlush: 20 * time.Millisecond, Logger: discard()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Printf(format+"\n", args...) // one write per line, unbuffered
		mu.Unlock()
	}
	create := func(subject string) (*keystore.APIKey, bool) {
		k, err := s.Create(ctx, keystore.CreateParams{Name: "crash test", Subject: subject, Scopes: []string{"a:b"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: create:", err)
			return nil, false
		}
		say("C %s %s", k.ID, k.Secret)
		return k, true
	}
	switch mode {
	case "writes":
		v, err := keystore.NewVerifier(s, keystore.VerifierOptions{SubscriptionStale: 200 * time.Millisecond, Logger: discard()})
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []*keystore.APIKey
				for i := 0; ; i++ {
					k, ok := create(fmt.Sprint("subject-", g))
					if !ok {
						return
					}
					mine = append(mine, k)
					v.Verify(ctx, k.Secret, keystore.SourceAPI)
					if i%2 == 1 {
						old := mine[len(mine)/2]
						if _, err := s.Revoke(ctx, old.ID, ptr("why-"+old.ID)); err != nil {
							fmt.Fprintln(os.Stderr, "child: revoke:", err)
							return
						}
						say("R %s", old.ID)
					}
				}
			}()
		}
		wg.Wait()
	case "compact":
		n := len(e.Client().Keys(ctx, ns+":key:*").Val())
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < 2000-n; i += 8 {
					if _, ok := create("bulk"); !ok {
						return
					}
				}
			}()
		}
		wg.Wait()
		compactPause = func() { time.Sleep(time.Millisecond) }
		go func() {
			for {
				create("during")
			}
		}()
		for {
			say("K")
			if err := e.Compact(); err != nil {
				fmt.Fprintln(os.Stderr, "child: compact:", err)
				return 1
			}
		}
	}
	return 1
}

func ptr[T any](v T) *T { return &v }

// seeded returns a random source whose seed the test logs, to replay a
// failure.
func seeded(t *testing.T) *rand.Rand {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, 0))
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
