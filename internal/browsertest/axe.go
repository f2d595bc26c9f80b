package browsertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// axePath is axe-core's browser bundle, installed by
// `npm ci --prefix internal/browsertest` from package-lock.json.
var axePath = filepath.Join("node_modules", "axe-core", "axe.min.js")

var axeSource = sync.OnceValues(func() (string, error) {
	path := filepath.Join(packageDir(), axePath)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("browsertest: reading axe-core (%v); install it with `make setup`, or: npm ci --prefix internal/browsertest", err)
	}
	return string(b), nil
})

// thisFile is the path of this source file, from which the package finds its
// node_modules; the tests that import the package run in their own directory.
func thisFile() string {
	_, file, _, _ := runtime.Caller(0)
	return file
}

// AxeViolation is one axe-core rule that a page breaks, with the elements
// that break it.
type AxeViolation struct {
	ID      string    `json:"id"`     // the rule, e.g. "label"
	Impact  string    `json:"impact"` // "minor", "moderate", "serious" or "critical"
	Help    string    `json:"help"`
	HelpURL string    `json:"helpUrl"`
	Nodes   []AxeNode `json:"nodes"`
}

// AxeNode is one element that breaks a rule.
type AxeNode struct {
	Target  string `json:"target"`  // a CSS selector for the element
	HTML    string `json:"html"`    // the start of its markup
	Summary string `json:"summary"` // what to fix
}

// axeRun runs axe-core on the whole document and returns only what the test
// needs (not axe's full result, which repeats every passing check).
const axeRun = `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations.map(v => ({
	id: v.id, impact: v.impact || "", help: v.help, helpUrl: v.helpUrl,
	nodes: v.nodes.map(n => ({
		target: n.target.map(s => Array.isArray(s) ? s.join(" >>> ") : String(s)).join(", "),
		html: n.html.slice(0, 200),
		summary: (n.failureSummary || "").replace(/\s+/g, " ").trim(),
	})),
})))`

// Axe injects axe-core into the page that ctx's tab shows and returns every
// violation it finds (of any impact). It injects through the DevTools
// protocol (Runtime.evaluate), which the page's Content-Security-Policy does
// not govern, so it works on pages that allow no inline or foreign script.
func Axe(ctx context.Context) ([]AxeViolation, error) {
	src, err := axeSource()
	if err != nil {
		return nil, err
	}
	loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof window.axe === "object"`))
	if err != nil {
		return nil, fmt.Errorf("browsertest: axe: %w", err)
	}
	if !loaded {
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](src)); err != nil {
			return nil, fmt.Errorf("browsertest: injecting axe-core: %w", err)
		}
	}
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]AxeViolation](axeRun, chromedp.EvalAwaitPromise))
	if err != nil {
		return nil, fmt.Errorf("browsertest: running axe-core: %w", err)
	}
	return v, nil
}

// CheckAccessible runs axe-core on the page that ctx's tab shows and fails
// the test (t.Errorf, so the test goes on to check the other pages) on each
// violation whose impact is serious or critical, naming the rule, its help,
// and the elements. name says which page it is in the message. Minor and
// moderate violations are logged, not failed.
func CheckAccessible(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	violations, err := Axe(ctx)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var minor []string
	for _, v := range violations {
		if v.Impact != "serious" && v.Impact != "critical" {
			minor = append(minor, fmt.Sprintf("%s (%s, %d elements)", v.ID, v.Impact, len(v.Nodes)))
			continue
		}
		t.Errorf("%s: axe-core: %s (%s): %s\n%s", name, v.ID, v.Impact, v.Help, describeNodes(v))
	}
	if len(minor) > 0 {
		t.Logf("%s: axe-core, minor or moderate: %s", name, strings.Join(minor, "; "))
	}
}

func describeNodes(v AxeViolation) string {
	var b strings.Builder
	for i, n := range v.Nodes {
		if i == 10 {
			fmt.Fprintf(&b, "\t… and %d more\n", len(v.Nodes)-i)
			break
		}
		fmt.Fprintf(&b, "\t%s: %s\n", n.Target, n.HTML)
		if n.Summary != "" {
			fmt.Fprintf(&b, "\t\t%s\n", n.Summary)
		}
	}
	fmt.Fprintf(&b, "\tsee %s", v.HelpURL)
	return b.String()
}
