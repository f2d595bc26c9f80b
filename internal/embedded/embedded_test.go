package embedded

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

func TestSnapshotRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	binary := string([]byte{0, 0xff, 0xfe, 'x', 0x80})
	rdb := e.Client()
	rdb.HSet(ctx, "h", "digest", binary, "name", "n")
	rdb.ZAdd(ctx, "z", redisZ(1.5, "a"), redisZ(2, "b"))
	rdb.Set(ctx, "s", "v", 0)
	rdb.Set(ctx, "transient", "v", time.Hour) // has a TTL: not saved
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rdb = e.Client()
	if got := rdb.HGet(ctx, "h", "digest").Val(); got != binary {
		t.Errorf("binary hash value = %q, want %q", got, binary)
	}
	if got := rdb.ZScore(ctx, "z", "a").Val(); got != 1.5 {
		t.Errorf("zset score = %v", got)
	}
	if got := rdb.Get(ctx, "s").Val(); got != "v" {
		t.Errorf("string = %q", got)
	}
	if n := rdb.Exists(ctx, "transient").Val(); n != 0 {
		t.Error("a key with a TTL was saved")
	}
}

func TestCorruptSnapshotRefused(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/"+SnapshotFile, []byte("not a snapshot"), 0o600)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), SnapshotFile) {
		t.Fatalf("Open(corrupt) = %v, want an error naming the snapshot", err)
	}
}

// TestKillBetweenWrites kills a process that creates keys as fast as it can,
// at several points, and checks after each kill that the snapshot loads and
// that every key whose Create had returned is there and verifies.
func TestKillBetweenWrites(t *testing.T) {
	dir := t.TempDir()
	var acked []string // "id secret", in order
	for round, killAfter := range []int{1, 7, 23, 40} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "KEYGATE_EMBEDDED_HELPER="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		n := 0
		for n < killAfter && sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "ak_") {
				acked = append(acked, line)
				n++
			}
		}
		cmd.Process.Kill() // SIGKILL: no deferred Close, no last snapshot
		cmd.Wait()
		if n < killAfter {
			t.Fatalf("round %d: writer stopped after %d keys", round, n)
		}

		e, err := Open(dir)
		if err != nil {
			t.Fatalf("round %d: snapshot after a kill does not load: %v", round, err)
		}
		s, _ := keystore.New(e.Client(), keystore.Options{LastUsedFlush: -1})
		for _, line := range acked {
			id, secret, _ := strings.Cut(line, " ")
			k, err := s.Verify(context.Background(), secret)
			if err != nil || k.ID != id {
				t.Fatalf("round %d: key %s, acknowledged before the kill, = %v", round, id, err)
			}
		}
		s.Close()
		e.Close()
	}
	t.Logf("%d acknowledged keys survived 4 kills", len(acked))
}

// TestMain runs the tests, or, in a subprocess of TestKillBetweenWrites,
// the writer that the test kills.
func TestMain(m *testing.M) {
	if dir := os.Getenv("KEYGATE_EMBEDDED_HELPER"); dir != "" {
		writeUntilKilled(dir)
	}
	os.Exit(m.Run())
}

// writeUntilKilled creates keys in the embedded store in dir as fast as it
// can, printing each one once Create has returned.
func writeUntilKilled(dir string) {
	e, err := Open(dir)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	s, _ := keystore.New(e.Client(), keystore.Options{LastUsedFlush: -1})
	for i := 0; i < 10_000; i++ {
		k, err := s.Create(context.Background(), keystore.CreateParams{Name: fmt.Sprint("k", i), Subject: "s"})
		if err != nil {
			fmt.Println("create:", err)
			os.Exit(1)
		}
		fmt.Println(k.ID, k.Secret)
	}
	os.Exit(0)
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
