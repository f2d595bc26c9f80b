package browsertest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// A phone's viewport in CSS pixels (an iPhone 12 to 15's), which
// CheckNoSidewaysScroll lays the page out at.
const (
	PhoneWidth  = 390
	PhoneHeight = 844
)

// layoutJS reports how the page is laid out now: the viewport's size, the
// document's scroll width, and (when it is wider than the viewport) the
// elements that reach furthest past the right edge, widest first, leaving
// out those inside a box that clips or scrolls them (they cannot widen the
// page).
const layoutJS = `new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(() => {
	const root = document.documentElement;
	const r = {innerWidth: window.innerWidth, innerHeight: window.innerHeight,
		clientWidth: root.clientWidth, scrollWidth: root.scrollWidth, culprits: []};
	if (r.scrollWidth > r.clientWidth) {
		const clipped = el => {
			for (let p = el.parentElement; p && p !== document.body && p !== root; p = p.parentElement) {
				if (getComputedStyle(p).overflowX !== "visible") return true;
			}
			return false;
		};
		const describe = el => {
			let s = el.tagName.toLowerCase();
			if (el.id) s += "#" + el.id;
			for (const c of el.classList) s += "." + c;
			const text = (el.innerText || el.value || "").replace(/\s+/g, " ").trim();
			if (text) s += " " + JSON.stringify(text.length > 40 ? text.slice(0, 40) + "…" : text);
			return s;
		};
		const over = [];
		for (const el of document.body.querySelectorAll("*")) {
			const b = el.getBoundingClientRect();
			if (b.right > r.clientWidth + 0.5 && b.width > 0 && !clipped(el)) {
				over.push({el, right: b.right, width: b.width});
			}
		}
		over.sort((a, b) => b.right - a.right || b.width - a.width);
		r.culprits = over.slice(0, 5).map(o => describe(o.el) + " (right edge at " + Math.round(o.right) + " px, " + Math.round(o.width) + " px wide)");
	}
	resolve(r);
})))`

type layout struct {
	InnerWidth  int64    `json:"innerWidth"`
	InnerHeight int64    `json:"innerHeight"`
	ClientWidth int64    `json:"clientWidth"`
	ScrollWidth int64    `json:"scrollWidth"`
	Culprits    []string `json:"culprits"`
}

func readLayout(ctx context.Context) (layout, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[layout](layoutJS, chromedp.EvalAwaitPromise))
}

// CheckNoSidewaysScroll lays the current page out as a phone would
// (PhoneWidth×PhoneHeight, mobile, touch) and fails the test if the page is
// wider than the screen, so that a person would have to scroll sideways,
// naming the elements that stick out furthest. A page without
// <meta name="viewport" content="width=device-width"> fails too: a phone
// lays it out 980 px wide and shrinks it to fit, too small to read. The page
// is not reloaded (a reload could resubmit a form or lose a secret that is
// shown once); the viewport is restored afterwards.
func CheckNoSidewaysScroll(t testing.TB, ctx context.Context) {
	t.Helper()
	before, err := readLayout(ctx)
	if err != nil {
		t.Fatalf("browsertest: reading the layout: %v", err)
	}
	defer func() {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(before.InnerWidth, before.InnerHeight)); err != nil {
			t.Errorf("browsertest: restoring the viewport: %v", err)
		}
	}()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(PhoneWidth, PhoneHeight,
		chromedp.EmulateMobile, chromedp.EmulateTouch,
		chromedp.EmulateOrientation(emulation.ScreenOrientationTypePortraitPrimary, 0))); err != nil {
		t.Fatalf("browsertest: emulating a phone: %v", err)
	}
	l, err := readLayout(ctx)
	if err != nil {
		t.Fatalf("browsertest: reading the layout at a phone's width: %v", err)
	}
	url, _ := chromedp.Run(ctx, chromedp.Location())
	switch {
	case l.ClientWidth > PhoneWidth:
		t.Errorf("%s: at a phone's width (%d px) the page is laid out %d px wide: it needs <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
			url, PhoneWidth, l.ClientWidth)
	case l.ScrollWidth > l.ClientWidth:
		t.Errorf("%s: at a phone's width the page scrolls sideways: it is %d px wide on a %d px screen; widest elements:\n\t%s",
			url, l.ScrollWidth, l.ClientWidth, strings.Join(l.Culprits, "\n\t"))
	}
}

// SetColorScheme makes the page see prefers-color-scheme as scheme ("light"
// or "dark"), so that a test can check (CheckAccessible, Screenshot) both of
// the console's colour schemes; "" restores the browser's default (light).
func SetColorScheme(t testing.TB, ctx context.Context, scheme string) {
	t.Helper()
	var features []*emulation.MediaFeature
	if scheme != "" {
		features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}
	}
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: features}); err != nil {
		t.Fatalf("browsertest: setting the colour scheme to %q: %v", scheme, err)
	}
}

// Screenshot writes a PNG of the whole page (not only the viewport) to path,
// creating its directory.
func Screenshot(t testing.TB, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("browsertest: taking a screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("browsertest: writing the screenshot: %v", err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}
