// Package browsertest drives the system Chromium, headless, from Go tests, so
// that the web console's tests use the pages the way a person does: they open
// a URL, fill fields by their labels, press buttons by their names and read the
// text, and they check each page with axe-core (accessibility), at a phone's
// width (no sideways scroll) and by a screenshot.
//
//	b := browsertest.New(t)          // one Chromium for the test
//	ctx := b.Tab(t)                  // a tab with its own cookies, 1280×900
//	browsertest.Navigate(t, ctx, srv.URL+"/console/")
//	browsertest.Fill(t, ctx, "Admin token", token)
//	browsertest.Submit(t, ctx, "Sign in")
//	browsertest.CheckAccessible(t, ctx, "keys list")
//	browsertest.CheckNoSidewaysScroll(t, ctx)
//	browsertest.Screenshot(t, ctx, "../../docs/screenshots/keys.png")
//
// The helpers fail the test themselves (t.Fatalf), with what the page had
// instead, so a test reads as the steps a person takes:
//
//   - [Navigate] opens a URL and waits for the page; [Submit] presses a button
//     or follows a link and waits for the page it loads, returning its HTTP
//     response (a 403 is a page too); [Click] presses without waiting.
//   - [Fill] types into the field whose label is given (or picks a <select>'s
//     option, or sets a date); [SetChecked] sets a checkbox or radio button.
//     Controls are found by their accessible name, as Chromium computes it
//     for screen readers (label text, button text, aria-label), never by CSS
//     selectors or ids; a hidden control is not found.
//   - [PageText] is the page's visible text; [Buttons] lists the buttons'
//     names (to check what a user is not offered).
//   - [AcceptDialogs] answers confirm() and the like with OK.
//   - [CheckAccessible] runs axe-core and fails on serious or critical
//     violations; [CheckNoSidewaysScroll] lays the page out at 390×844;
//     [SetColorScheme] switches prefers-color-scheme (check both);
//     [Screenshot] writes a full-page PNG.
//
// For anything else, ctx is an ordinary chromedp context
// (github.com/chromedp/chromedp v0.23, whose actions return their values:
// chromedp.Run(ctx, chromedp.Evaluate[string](...))).
//
// What it needs, both installed by `make setup` (.ci/setup), which `make test`
// runs first:
//
//   - Chromium at /usr/bin/chromium (Debian package chromium; or the
//     KEYGATE_CHROMIUM environment variable names another binary):
//     apt-get install -y --no-install-recommends chromium
//   - axe-core under internal/browsertest/node_modules, exactly as
//     internal/browsertest/package-lock.json pins it:
//     npm ci --prefix internal/browsertest
//
// Run its own tests with `go test -race -count=1 ./internal/browsertest/`.
// A missing Chromium or axe-core fails the test with the command to run; it is
// never a skip. The browser runs as root with --no-sandbox, so it must only
// visit pages the test serves itself on loopback.
package browsertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TabTimeout bounds everything a tab from [Browser.Tab] does: a hung browser
// or a page that never loads fails the test after this long instead of
// hanging it until go test's own timeout.
const TabTimeout = 90 * time.Second

// startTimeout bounds Chromium's start (it takes about a second on an idle
// machine; the shared two-core test machine can be much slower).
const startTimeout = 60 * time.Second

// Viewport is the size of a new tab's window in CSS pixels (a laptop).
const (
	ViewportWidth  = 1280
	ViewportHeight = 900
)

// Browser is one headless Chromium process; each [Browser.Tab] is a tab in it.
type Browser struct {
	ctx context.Context // chromedp's context of the browser
	out *tailBuffer     // Chromium's stdout and stderr, logged when a test fails
}

// New starts a headless Chromium for the test and closes it when the test
// ends. It fails the test (never skips it) when Chromium is not installed.
func New(t testing.TB) *Browser {
	t.Helper()
	path, err := chromiumPath()
	if err != nil {
		t.Fatal(err)
	}
	profile := t.TempDir() // removed after the cleanup below closes Chromium
	out := &tailBuffer{max: 16 << 10}
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // as root in a container; only loopback pages are visited
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &Browser{ctx: ctx, out: out}
	t.Cleanup(func() {
		// Close Chromium gracefully (it flushes its profile), bounded so
		// that a hung browser is killed instead of hanging the cleanup.
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		_ = chromedp.Cancel(cctx)
		ccancel()
		cancel()
		allocCancel() // kills what is left and waits for the process to end
		if t.Failed() {
			if s := out.relevant(); s != "" {
				t.Logf("Chromium's output:\n%s", s)
			}
		}
	})

	// The first action starts the browser and binds its life to ctx, so it
	// runs on ctx itself (no timeout); a timer bounds the start instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("browsertest: starting %s: %v\n%s", path, err, out.relevant())
		}
	case <-time.After(startTimeout):
		cancel()
		<-started
		t.Fatalf("browsertest: %s did not start within %v\n%s", path, startTimeout, out.relevant())
	}
	return b
}

// chromiumPath finds the browser: $KEYGATE_CHROMIUM, else chromium on PATH.
func chromiumPath() (string, error) {
	if p := os.Getenv("KEYGATE_CHROMIUM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("browsertest: KEYGATE_CHROMIUM=%s: %v", p, err)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("browsertest: Chromium is not installed; the browser tests need it. " +
		"Run `make setup`, or: sudo apt-get install -y --no-install-recommends chromium")
}

// Tab opens a new tab with a viewport of [ViewportWidth]×[ViewportHeight] and
// returns its context, for chromedp actions and this package's helpers. Each
// tab has a browser context of its own (like a private window): its own
// cookies and storage, so two tabs can be signed in as two different users.
// The tab is closed when the test ends, and everything it does is bounded by
// [TabTimeout].
func (b *Browser) Tab(t testing.TB) context.Context {
	t.Helper()
	tabCtx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(tabCtx, TabTimeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
	})
	// The first action creates the tab; it runs on tabCtx so that the
	// tab's life is not bound to the timeout's context.
	created := make(chan error, 1)
	go func() { created <- chromedp.Do(tabCtx, chromedp.EmulateViewport(ViewportWidth, ViewportHeight)) }()
	select {
	case err := <-created:
		if err != nil {
			t.Fatalf("browsertest: opening a tab: %v", err)
		}
	case <-ctx.Done():
		cancel()
		<-created
		t.Fatalf("browsertest: opening a tab took more than %v", TabTimeout)
	}
	return ctx
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if over := w.buf.Len() - w.max; over > 0 {
		w.buf.Next(over)
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// relevant is the output without the lines that every headless start in a
// container writes (no D-Bus, the Debian wrapper's shell warning).
func (w *tailBuffer) relevant() string {
	var keep []string
	for line := range strings.SplitSeq(w.String(), "\n") {
		if line == "" || strings.Contains(line, "dbus") || strings.Contains(line, "unexpected operator") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// packageDir is this package's directory in the source tree (where its
// node_modules is), wherever the test that uses it runs from.
func packageDir() string {
	return filepath.Dir(thisFile())
}
