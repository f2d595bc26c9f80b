package storedump

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/embedded"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

func ephemeral(key string) bool { return keystore.IsEphemeral("keygate", key) }

// TestRoundTrip exports from the embedded store and imports into a real
// redis-server: every value byte for byte, scores, expiries; not the
// ephemeral keys nor other namespaces.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	e, err := embedded.Open(t.TempDir(), embedded.Options{Ephemeral: ephemeral})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	src := e.Client()
	digest := string([]byte{0, 0xff, 0xfe, 0x80, 'x'})
	big := make([]redis.Z, 1500)
	for i := range big {
		big[i] = redis.Z{Score: float64(1_700_000_000_000 + i), Member: fmt.Sprintf("ak_%032x", i)}
	}
	for _, err := range []error{
		src.HSet(ctx, "keygate:key:ak_1", "n", "naïve ✓", "h", digest, "r", "1", "rr", "leaked").Err(),
		src.ZAdd(ctx, "keygate:keys", big...).Err(),
		src.ZAdd(ctx, "keygate:odd", redis.Z{Score: math.Inf(1), Member: "up"}, redis.Z{Score: 0.1, Member: "tenth"}).Err(),
		src.Set(ctx, "keygate:temp", "v", time.Hour).Err(),
		src.RPush(ctx, "keygate:list", "b", "a", "b").Err(),
		src.SAdd(ctx, "keygate:set", digest, "x").Err(),
		src.ZAdd(ctx, "keygate:{inv}:verifiers", redis.Z{Score: 1, Member: "instance"}).Err(),
		src.Set(ctx, "other:app", "v", 0).Err(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	var dump bytes.Buffer
	n, err := Export(ctx, src, &dump, Options{Ephemeral: ephemeral})
	if err != nil || n != 6 {
		t.Fatalf("Export = %d, %v; want 6 keys", n, err)
	}
	if strings.Contains(dump.String(), digest) || !strings.Contains(dump.String(), `"naïve ✓"`) {
		t.Errorf("binary values must be base64, text must stay text:\n%.500s", dump.String())
	}

	dst := redistest.Server(t)
	if n, err := Import(ctx, dst, bytes.NewReader(dump.Bytes()), Options{}); err != nil || n != 6 {
		t.Fatalf("Import = %d, %v", n, err)
	}
	if got := dst.HGet(ctx, "keygate:key:ak_1", "h").Val(); got != digest {
		t.Errorf("digest = %q", got)
	}
	if got := dst.HGetAll(ctx, "keygate:key:ak_1").Val(); got["rr"] != "leaked" || got["n"] != "naïve ✓" {
		t.Errorf("record = %v", got)
	}
	if got := dst.ZRangeWithScores(ctx, "keygate:keys", 0, -1).Val(); len(got) != len(big) || got[1499].Score != 1_700_000_001_499 {
		t.Errorf("index: %d entries, last %v", len(got), got[len(got)-1])
	}
	if got := dst.ZScore(ctx, "keygate:odd", "up").Val(); !math.IsInf(got, 1) {
		t.Errorf("+inf score = %v", got)
	}
	if ttl := dst.PTTL(ctx, "keygate:temp").Val(); ttl < 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL = %v, want about an hour", ttl)
	}
	if got := dst.LRange(ctx, "keygate:list", 0, -1).Val(); strings.Join(got, ",") != "b,a,b" {
		t.Errorf("list = %v", got)
	}
	if n := dst.Exists(ctx, "keygate:{inv}:verifiers", "other:app").Val(); n != 0 {
		t.Errorf("ephemeral or foreign keys copied: %d", n)
	}

	// Again: refused, nothing written; with Overwrite, replaced.
	dst.HSet(ctx, "keygate:key:ak_1", "extra", "1")
	if _, err := Import(ctx, dst, bytes.NewReader(dump.Bytes()), Options{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Import = %v, want ErrExists", err)
	}
	if _, err := Import(ctx, dst, bytes.NewReader(dump.Bytes()), Options{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if dst.HExists(ctx, "keygate:key:ak_1", "extra").Val() {
		t.Error("Overwrite kept a field the dump does not have")
	}
}

func TestImportRefusesBadDumps(t *testing.T) {
	ctx := context.Background()
	e, err := embedded.Open(t.TempDir(), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.Client().Set(ctx, "keygate:a", "1", 0)
	e.Client().Set(ctx, "keygate:b", "2", 0)
	var dump bytes.Buffer
	if _, err := Export(ctx, e.Client(), &dump, Options{}); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(dump.String(), "\n")
	_, dst := redistest.Mini(t)
	for name, input := range map[string]string{
		"cut short":       strings.Join(lines[:len(lines)-2], ""),
		"a line missing":  lines[0] + lines[1] + lines[3],
		"not a dump":      "hello\n",
		"other namespace": strings.Replace(dump.String(), `"namespace":"keygate"`, `"namespace":"other"`, 1),
		"key outside":     strings.Replace(dump.String(), `"keygate:a"`, `"elsewhere:a"`, 1),
	} {
		if _, err := Import(ctx, dst, strings.NewReader(input), Options{}); !errors.Is(err, ErrBadDump) {
			t.Errorf("%s: Import = %v, want ErrBadDump", name, err)
		}
	}
	if n := dst.DBSize(ctx).Val(); n != 0 {
		t.Errorf("refused imports wrote %d keys", n)
	}
}
