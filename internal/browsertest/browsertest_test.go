package browsertest

import (
	"fmt"
	"html"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// csp is the policy the console serves: no inline script, nothing foreign.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"

// servePages serves each file (path -> content) with the strict CSP, as the
// console does: pages, and the stylesheets (*.css) they link.
func servePages(t *testing.T, files map[string]string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for path, content := range files {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", csp)
			if strings.HasSuffix(path, ".css") {
				w.Header().Set("Content-Type", "text/css; charset=utf-8")
			} else {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
			}
			fmt.Fprint(w, content)
		})
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// document wraps a body in a complete, accessible document (language, title,
// viewport for phones, a main landmark), linking the stylesheets.
func document(title, body string, stylesheets ...string) string {
	head := `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
		`<meta name="viewport" content="width=device-width, initial-scale=1">` +
		`<title>` + title + `</title>`
	for _, s := range stylesheets {
		head += `<link rel="stylesheet" href="` + s + `">`
	}
	return head + `</head><body><main><h1>` + title + `</h1>` + body + `</main></body></html>`
}

// recorder is a testing.TB that records failures instead of failing the
// test, so that a test can assert that a check does fail. Fatal ends the
// goroutine, as it does in a test; run the check with [recorder.run].
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	fatal  bool
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.mu.Lock()
	r.fatal = true
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// run runs check with the recorder in a goroutine of its own (so that a
// Fatal ends only that goroutine) and returns what it recorded.
func (r *recorder) run(check func(tb testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(r)
	}()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

func record(t *testing.T, check func(tb testing.TB)) string {
	r := &recorder{TB: t}
	return r.run(check)
}

func TestCheckAccessible(t *testing.T) {
	srv := servePages(t, map[string]string{
		"/good": document("Keys", `<form method="post" action="/good">
			<label for="q">Search keys</label> <input id="q" name="q" type="search">
			<label><input type="checkbox" name="all"> Include revoked keys</label>
			<button type="submit">Search</button></form>
			<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="usage chart">`),
		"/unlabelled": document("Keys", `<form method="post" action="/unlabelled">
			<input id="q" name="q" type="text"><button type="submit">Search</button></form>`),
		"/noalt":     document("Keys", `<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">`),
		"/nameless":  document("Keys", `<form method="post" action="/nameless"><button type="submit"></button></form>`),
		"/contrast":  document("Keys", `<p class="faint">Revoked keys stop working at once.</p>`, "/faint.css"),
		"/faint.css": `.faint { color: #bbb; background: #fff; }`,
		// Inline script and style, which the CSP forbids: the page must
		// look as if neither were there, or the tests below would not be
		// testing against a strict CSP.
		"/inline": document("Keys", `<p id="p">unchanged</p><style>#p { display: none }</style>
			<script>document.getElementById("p").textContent = "inline script ran"</script>`),
	})
	b := New(t)
	ctx := b.Tab(t)

	t.Run("accessible page passes", func(t *testing.T) {
		if resp := Navigate(t, ctx, srv.URL+"/good"); resp.Status != http.StatusOK {
			t.Fatalf("status %d", resp.Status)
		}
		if got := record(t, func(tb testing.TB) { CheckAccessible(tb, ctx, "good") }); got != "" {
			t.Errorf("CheckAccessible failed an accessible page:\n%s", got)
		}
	})

	t.Run("the CSP is in force", func(t *testing.T) {
		Navigate(t, ctx, srv.URL+"/inline")
		if got := PageText(t, ctx); !strings.Contains(got, "unchanged") {
			t.Fatalf("the page's inline script or style ran despite the CSP; the page reads %q", got)
		}
		// axe-core is injected all the same.
		if got := record(t, func(tb testing.TB) { CheckAccessible(tb, ctx, "inline") }); got != "" {
			t.Errorf("CheckAccessible on the CSP page:\n%s", got)
		}
	})

	for _, tc := range []struct {
		path, rule, target string
	}{
		{"/unlabelled", "label", "#q"},         // critical
		{"/noalt", "image-alt", "img"},         // critical
		{"/nameless", "button-name", "button"}, // critical
		{"/contrast", "color-contrast", "p"},   // serious
	} {
		t.Run(tc.path+" fails", func(t *testing.T) {
			Navigate(t, ctx, srv.URL+tc.path)
			got := record(t, func(tb testing.TB) { CheckAccessible(tb, ctx, tc.path) })
			if !strings.Contains(got, "axe-core: "+tc.rule+" (") {
				t.Fatalf("CheckAccessible did not report %s:\n%s", tc.rule, got)
			}
			if !strings.Contains(got, tc.path+": ") || !strings.Contains(got, "\t"+tc.target+": ") {
				t.Errorf("the report does not name the page and the element %s:\n%s", tc.target, got)
			}
			t.Logf("reported:\n%s", got)
		})
	}
}

func TestCheckNoSidewaysScroll(t *testing.T) {
	srv := servePages(t, map[string]string{
		// A table of keys that wraps and a form whose fields shrink: fits.
		"/responsive": document("Keys", `<form method="get" action="/responsive">
			<label for="q">Search keys</label> <input id="q" name="q" type="search" class="field">
			<button type="submit">Search</button></form>
			<div class="scroller"><table><tr><th>Key</th><th>Subject</th><th>Last used</th></tr>
			<tr><td>kg_live_0123456789abcdef0123456789</td><td>customer-42</td><td>2026-11-30 14:00</td></tr></table></div>`,
			"/responsive.css"),
		"/responsive.css": `.field { max-width: 100%; box-sizing: border-box; }
			.scroller { overflow-x: auto; } table { width: 700px; }`,
		// A fixed-width layout, as a desktop-only page would have.
		"/fixed":     document("Keys", `<div class="wide" id="keys">the keys table</div>`, "/fixed.css"),
		"/fixed.css": `.wide { width: 900px; }`,
		// No viewport meta: a phone lays it out 980 px wide.
		"/nometa": `<!doctype html><html lang="en"><head><title>Keys</title></head><body><main><h1>Keys</h1></main></body></html>`,
	})
	b := New(t)
	ctx := b.Tab(t)
	// The check leaves the tab as it found it.
	restored := func(t *testing.T) {
		l, err := readLayout(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l.InnerWidth != ViewportWidth || l.InnerHeight != ViewportHeight {
			t.Errorf("viewport after the check = %dx%d, want it restored to %dx%d", l.InnerWidth, l.InnerHeight, ViewportWidth, ViewportHeight)
		}
	}

	t.Run("responsive page passes", func(t *testing.T) {
		Navigate(t, ctx, srv.URL+"/responsive")
		if got := record(t, func(tb testing.TB) { CheckNoSidewaysScroll(tb, ctx) }); got != "" {
			t.Errorf("CheckNoSidewaysScroll failed a responsive page:\n%s", got)
		}
		restored(t)
	})
	t.Run("fixed-width page fails", func(t *testing.T) {
		Navigate(t, ctx, srv.URL+"/fixed")
		got := record(t, func(tb testing.TB) { CheckNoSidewaysScroll(tb, ctx) })
		if !strings.Contains(got, "scrolls sideways") || !strings.Contains(got, `div#keys.wide "the keys table"`) {
			t.Fatalf("CheckNoSidewaysScroll did not report the wide element:\n%s", got)
		}
		t.Logf("reported: %s", got)
		restored(t)
	})
	t.Run("page without a viewport meta fails", func(t *testing.T) {
		Navigate(t, ctx, srv.URL+"/nometa")
		got := record(t, func(tb testing.TB) { CheckNoSidewaysScroll(tb, ctx) })
		if !strings.Contains(got, `<meta name="viewport"`) {
			t.Fatalf("CheckNoSidewaysScroll did not report the missing viewport meta:\n%s", got)
		}
		restored(t)
	})
}

func TestScreenshot(t *testing.T) {
	long := strings.Repeat("<p>A key's audit trail.</p>", 200) // taller than the viewport
	srv := servePages(t, map[string]string{"/long": document("Audit", long)})
	b := New(t)
	ctx := b.Tab(t)
	Navigate(t, ctx, srv.URL+"/long")

	path := filepath.Join(t.TempDir(), "docs", "screenshots", "audit.png")
	Screenshot(t, ctx, path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if w, h := img.Bounds().Dx(), img.Bounds().Dy(); w != ViewportWidth || h <= ViewportHeight {
		t.Errorf("screenshot is %dx%d, want the whole page: %d wide and taller than the %d px viewport", w, h, ViewportWidth, ViewportHeight)
	}
}

// formPage is a sign-in and create-key form that posts back to itself; the
// server echoes what it received, so the test sees what the browser sent.
func formServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/form", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			status := http.StatusOK
			if r.PostForm.Get("subject") == "forbidden" {
				status = http.StatusForbidden
			}
			w.WriteHeader(status)
			fmt.Fprint(w, document("Created", fmt.Sprintf(`<p>button=%s subject=%s scope=%s expires=%s note=%s all=%s</p>`,
				html.EscapeString(r.PostForm.Get("button")), html.EscapeString(r.PostForm.Get("subject")),
				html.EscapeString(r.PostForm.Get("scope")), html.EscapeString(r.PostForm.Get("expires")),
				html.EscapeString(r.PostForm.Get("note")), html.EscapeString(r.PostForm.Get("all")))))
			return
		}
		fmt.Fprint(w, document("Create a key", `<form method="post" action="/form">
			<p><label for="subject">Subject</label> <input id="subject" name="subject" value="prefilled"></p>
			<p><label>Scope <select name="scope"><option value="r">read</option><option value="rw">read and write</option></select></label></p>
			<p><label for="expires">Expires at</label> <input id="expires" name="expires" type="datetime-local"></p>
			<p><label for="note">Note</label> <textarea id="note" name="note"></textarea></p>
			<p><input type="checkbox" id="all" name="all" value="yes"> <label for="all">Include revoked keys</label></p>
			<p class="hidden"><label for="secret">Hidden field</label> <input id="secret" name="secret"></p>
			<button type="submit" name="button" value="create">Create key</button>
			<button type="submit" name="button" value="other">Create   and
				copy</button>
			<a href="/form">Cancel</a></form>`, "/form.css"))
	})
	mux.HandleFunc("/form.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css")
		fmt.Fprint(w, `.hidden { display: none }`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestFillAndSubmit(t *testing.T) {
	srv := formServer(t)
	b := New(t)
	ctx := b.Tab(t)

	t.Run("fields by label, button by name", func(t *testing.T) {
		Navigate(t, ctx, srv.URL+"/form")
		Fill(t, ctx, "Subject", "customer-42 & <co>")
		Fill(t, ctx, "Scope", "read and write")
		Fill(t, ctx, "Expires at", "2027-01-31T12:30")
		Fill(t, ctx, "Note", "for the billing job")
		SetChecked(t, ctx, "Include revoked keys", true)
		if got, want := Buttons(t, ctx), []string{"Create key", "Create and copy"}; !slices.Equal(got, want) {
			t.Errorf("Buttons = %q, want %q", got, want)
		}
		resp := Submit(t, ctx, "Create key")
		if resp.Status != http.StatusOK {
			t.Errorf("status %d", resp.Status)
		}
		want := "button=create subject=customer-42 & <co> scope=rw expires=2027-01-31T12:30 note=for the billing job all=yes"
		if got := PageText(t, ctx); !strings.Contains(got, want) {
			t.Errorf("the server received\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("collapsed whitespace in a name; HTTP status", func(t *testing.T) {
		Navigate(t, ctx, srv.URL+"/form")
		Fill(t, ctx, "Subject", "forbidden")
		if resp := Submit(t, ctx, "Create and copy"); resp.Status != http.StatusForbidden {
			t.Errorf("status %d, want 403", resp.Status)
		}
		if got, want := PageText(t, ctx), "button=other subject=forbidden scope=r expires= note= all="; !strings.Contains(got, want) {
			t.Errorf("the server received %q, want %q", got, want)
		}
	})
	t.Run("a link by its text", func(t *testing.T) {
		Navigate(t, ctx, srv.URL+"/form")
		Fill(t, ctx, "Subject", "typed")
		Click(t, ctx, "Cancel")
		// Click does not wait for the page; the link reloads the form.
		if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("subject"))); err != nil {
			t.Fatal(err)
		}
		if got, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("subject"))); err != nil || got != "prefilled" {
			t.Errorf("after Cancel the subject is %q (%v), want the form reloaded", got, err)
		}
	})

	// Each failure names what is missing and lists what the page has. The
	// page is loaded, so a second is as good a wait as ten.
	defer func(d time.Duration) { findTimeout = d }(findTimeout)
	findTimeout = time.Second
	for _, tc := range []struct {
		name  string
		check func(tb testing.TB)
		want  string
	}{
		{"no such button", func(tb testing.TB) { Click(tb, ctx, "Revoke") },
			`no button or link named "Revoke" (after 1s); the page has: "Create key", "Create and copy", "Cancel"`},
		{"a hidden field is not found", func(tb testing.TB) { Fill(tb, ctx, "Hidden field", "x") },
			`no field named "Hidden field"`},
		{"a label is not a button", func(tb testing.TB) { Click(tb, ctx, "Subject") },
			`no button or link named "Subject"`},
		{"no such option", func(tb testing.TB) { Fill(tb, ctx, "Scope", "admin") },
			`no option "admin"; the options are "read", "read and write"`},
		{"a checkbox is not a field", func(tb testing.TB) { Fill(tb, ctx, "Include revoked keys", "x") },
			`no field named "Include revoked keys"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			Navigate(t, ctx, srv.URL+"/form")
			got := record(t, tc.check)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want it to contain %q", got, tc.want)
			}
		})
	}
}

func TestAcceptDialogs(t *testing.T) {
	srv := servePages(t, map[string]string{
		"/revoke": document("Key", `<form method="post" action="/revoked" id="revoke">
			<button type="submit">Revoke key</button></form><script src="/confirm.js"></script>`),
		// The console's kind of script: external (the CSP allows 'self'),
		// asking before a destructive form is sent.
		"/confirm.js": `document.getElementById("revoke").addEventListener("submit", e => {
			if (!confirm("Revoke this key? It stops working at once.")) e.preventDefault();
		});`,
		"/revoked": document("Revoked", `<p>The key is revoked.</p>`),
	})
	b := New(t)
	ctx := b.Tab(t)
	asked := AcceptDialogs(t, ctx)
	Navigate(t, ctx, srv.URL+"/revoke")
	Submit(t, ctx, "Revoke key")
	if got := PageText(t, ctx); !strings.Contains(got, "The key is revoked.") {
		t.Errorf("after confirming, the page reads %q", got)
	}
	if got, want := asked(), []string{"Revoke this key? It stops working at once."}; !slices.Equal(got, want) {
		t.Errorf("dialogs = %q, want %q", got, want)
	}
}

func TestSetColorScheme(t *testing.T) {
	srv := servePages(t, map[string]string{
		"/page": document("Keys", `<p>keys</p>`, "/schemes.css"),
		"/schemes.css": `body { background: rgb(255, 255, 255); }
			@media (prefers-color-scheme: dark) { body { background: rgb(17, 17, 17); } }`,
	})
	b := New(t)
	ctx := b.Tab(t)
	Navigate(t, ctx, srv.URL+"/page")
	background := func() string {
		bg, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).backgroundColor`))
		if err != nil {
			t.Fatal(err)
		}
		return bg
	}
	for _, tc := range []struct{ scheme, want string }{
		{"dark", "rgb(17, 17, 17)"},
		{"light", "rgb(255, 255, 255)"},
		{"dark", "rgb(17, 17, 17)"},
		{"", "rgb(255, 255, 255)"},
	} {
		SetColorScheme(t, ctx, tc.scheme)
		if got := background(); got != tc.want {
			t.Errorf("scheme %q: background %s, want %s", tc.scheme, got, tc.want)
		}
	}
}

func TestTabsHaveTheirOwnCookies(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("set"); v != "" {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		}
		c, err := r.Cookie("session")
		who := "nobody"
		if err == nil {
			who = c.Value
		}
		fmt.Fprint(w, document("Who", "<p>signed in as "+html.EscapeString(who)+"</p>"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	b := New(t)
	admin, reader := b.Tab(t), b.Tab(t)
	Navigate(t, admin, srv.URL+"/?set=admin")
	Navigate(t, reader, srv.URL+"/")
	if got := PageText(t, reader); !strings.Contains(got, "signed in as nobody") {
		t.Errorf("a new tab sees another tab's cookie: %q", got)
	}
	Navigate(t, reader, srv.URL+"/?set=reader")
	Navigate(t, admin, srv.URL+"/")
	if got := PageText(t, admin); !strings.Contains(got, "signed in as admin") {
		t.Errorf("the first tab's session = %q, want admin's", got)
	}
}

// BenchmarkAxe is what CheckAccessible costs a console test per page: one
// axe-core run (injection included, as after each navigation) on a small
// form page.
func BenchmarkAxe(b *testing.B) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		fmt.Fprint(w, document("Keys", `<form method="post"><label for="q">Search keys</label>
			<input id="q" name="q"><button type="submit">Search</button></form>`))
	})
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	browser := New(b)
	ctx := browser.Tab(b)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		Navigate(b, ctx, srv.URL) // a fresh page, without axe-core
		b.StartTimer()
		v, err := Axe(ctx)
		if err != nil || len(v) != 0 {
			b.Fatalf("axe: %v %v", v, err)
		}
	}
}
