package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// row is one line of the table.
type row struct {
	measure  string
	keygate  string // keygate's figure, medians
	baseline string // the baseline's, same run; "—" when there is none
	compare  string // ratio or difference to the baseline
	goal     string
	verdict  string // met, missed, or "report" for a measure without a goal
	note     string // how it was measured; printed under the table
}

func render(machine string, c config, rows []row, took time.Duration) string {
	var b strings.Builder
	if c.scale {
		b.WriteString("## At scale\n\n")
		b.WriteString("Produced by `make bench-scale` (`go run ./internal/benchcmd -scale`); every figure below comes from one run of it,\n")
		fmt.Fprintf(&b, "on loopback, on one redis-server holding a data set of %d keys.\n\n", c.scaleKeys)
	} else {
		b.WriteString("Produced by `make bench` (`go run ./internal/benchcmd`); every figure below comes from one run of it,\n")
		b.WriteString("on loopback, with keygate and its baseline taking turns in the same run.\n\n")
	}
	fmt.Fprintf(&b, "Machine: %s.  \n", machine)
	runs := fmt.Sprintf("%d runs per measure (medians quoted)", c.runs)
	if c.scale {
		runs = "the calls each row names"
	}
	fmt.Fprintf(&b, "Run: %s, %s, took %s; load average (1 min) %s at the start, %s at the end.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runs, took.Round(time.Second), c.loadAtStart, loadAverage())
	b.WriteString("| measure | keygate | baseline (same run) | keygate vs baseline | goal | met? |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n",
			cell(r.measure), cell(r.keygate), cell(r.baseline), cell(r.compare), cell(r.goal), cell(r.verdict))
	}
	b.WriteString("\nHow each row is measured:\n\n")
	for _, r := range rows {
		if r.note != "" {
			fmt.Fprintf(&b, "- **%s**: %s\n", r.measure, r.note)
		}
	}
	return b.String()
}

// merge puts rows into a table render wrote earlier: a row of the same
// measure, and its note, are replaced; the others are added at the end.
// A line under the header says when and where these rows were measured.
func merge(old, machine string, c config, rows []row, took time.Duration) string {
	lines := strings.Split(strings.TrimRight(old, "\n"), "\n")
	rowLine := func(r row) string {
		return fmt.Sprintf("| %s | %s | %s | %s | %s | %s |", cell(r.measure), cell(r.keygate), cell(r.baseline), cell(r.compare), cell(r.goal), cell(r.verdict))
	}
	noteLine := func(r row) string { return fmt.Sprintf("- **%s**: %s", r.measure, r.note) }
	stamp := fmt.Sprintf("Rows re-measured with `-only %s`: %s, %d runs, took %s, on %s.",
		c.only, time.Now().UTC().Format("2006-01-02 15:04 UTC"), c.runs, took.Round(time.Second), machine)
	var out []string
	lastRow, lastNote := -1, -1
	done := map[string]bool{}
	for _, l := range lines {
		if strings.HasPrefix(l, "Rows re-measured with `-only "+c.only.String()+"`") {
			if len(out) > 0 && out[len(out)-1] == "" {
				out = out[:len(out)-1]
			}
			continue
		}
		replaced := false
		for _, r := range rows {
			if strings.HasPrefix(l, "| "+cell(r.measure)+" |") {
				out, replaced = append(out, rowLine(r)), true
				done["row "+r.measure] = true
			} else if strings.HasPrefix(l, "- **"+r.measure+"**:") {
				out, replaced = append(out, noteLine(r)), true
				done["note "+r.measure] = true
			}
		}
		if !replaced {
			out = append(out, l)
		}
		switch {
		case strings.HasPrefix(l, "| "):
			lastRow = len(out) - 1
		case strings.HasPrefix(l, "- **"):
			lastNote = len(out) - 1
		case strings.HasPrefix(l, "Run: "):
			out = append(out, "", stamp)
		}
	}
	var newRows, newNotes []string
	for _, r := range rows {
		if !done["row "+r.measure] {
			newRows = append(newRows, rowLine(r))
		}
		if !done["note "+r.measure] && r.note != "" {
			newNotes = append(newNotes, noteLine(r))
		}
	}
	if lastNote >= 0 {
		out = append(out[:lastNote+1], append(newNotes, out[lastNote+1:]...)...)
	} else {
		out = append(out, newNotes...)
	}
	if lastRow >= 0 {
		out = append(out[:lastRow+1], append(newRows, out[lastRow+1:]...)...)
	}
	return strings.Join(out, "\n") + "\n"
}

// loadAverage is the 1-minute load average of the machine: on shared
// cores, other work shows in the figures.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

// The sections of BENCHMARKS.md that make bench and make bench-scale
// write, each between its markers; the file's title comes first.
const (
	benchTitle    = "# keygate benchmarks\n\n"
	benchBegin    = "<!-- make bench: begin -->\n"
	benchEnd      = "<!-- make bench: end -->\n"
	scaleBegin    = "<!-- make bench-scale: begin -->\n"
	scaleEnd      = "<!-- make bench-scale: end -->\n"
	noScaleResult = "## At scale\n\nNot measured yet: run `make bench-scale`.\n"
)

// writeSection writes table as the section of make bench, or of make
// bench-scale, of the file at path, keeping the other section as it is,
// and what follows the sections (figures measured by hand, with go test
// -bench).
func writeSection(path string, scale bool, table string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	bench := section(string(old), benchBegin, benchEnd, "")
	scaled := section(string(old), scaleBegin, scaleEnd, noScaleResult)
	_, tail, _ := strings.Cut(string(old), scaleEnd)
	if scale {
		scaled = table
	} else {
		bench = table
	}
	out := benchTitle + benchBegin + bench + benchEnd + "\n" + scaleBegin + scaled + scaleEnd + tail
	return os.WriteFile(path, []byte(out), 0o644)
}

// section returns what s holds between begin and end, or def.
func section(s, begin, end, def string) string {
	_, rest, ok := strings.Cut(s, begin)
	if !ok {
		return def
	}
	body, _, ok := strings.Cut(rest, end)
	if !ok {
		return def
	}
	return body
}

func cell(s string) string {
	if s == "" {
		return "—"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile returns the p-th percentile (0–100) of sorted, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ratios divides a[i] by b[i].
func ratios(a, b []float64) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] / b[i]
	}
	return out
}

// dur formats a duration in seconds for a table cell: 3 significant
// digits, in the unit that fits.
func dur(s float64) string {
	switch {
	case s < 1e-6:
		return fmt.Sprintf("%.0f ns", s*1e9)
	case s < 1e-3:
		return fmt.Sprintf("%.3g µs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.3g ms", s*1e3)
	}
	return fmt.Sprintf("%.3g s", s)
}

// rate formats operations per second.
func rate(r float64) string {
	switch {
	case r >= 1e6:
		return fmt.Sprintf("%.2fM/s", r/1e6)
	case r >= 1e4:
		return fmt.Sprintf("%.1fk/s", r/1e3)
	}
	return fmt.Sprintf("%.0f/s", r)
}
