package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteSectionKeepsTheRest rewrites each section of a BENCHMARKS.md in
// turn: the other section and the text after both are kept as they were.
func TestWriteSectionKeepsTheRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	const tail = "\n## Measured by hand\n\nfigures\n"
	old := benchTitle + benchBegin + "old bench\n" + benchEnd + "\n" + scaleBegin + "old scale\n" + scaleEnd + tail
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, false, "new bench\n"); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, true, "new scale\n"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := benchTitle + benchBegin + "new bench\n" + benchEnd + "\n" + scaleBegin + "new scale\n" + scaleEnd + tail
	if got := string(b); got != want {
		t.Fatalf("file is\n%s\nwant\n%s", got, want)
	}

	// A file without sections gets both, the scale one saying it was not
	// measured.
	fresh := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := writeSection(fresh, false, "bench\n"); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), scaleBegin+noScaleResult+scaleEnd) {
		t.Fatalf("new file is\n%s", b)
	}
}
