package browsertest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
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

// page wraps a body in a complete, accessible document (language, title,
// viewport for phones, a main landmark), linking the stylesheets.
func page(title, body string, stylesheets ...string) string {
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
		"/good": page("Keys", `<form method="post" action="/good">
			<label for="q">Search keys</label> <input id="q" name="q" type="search">
			<label><input type="checkbox" name="all"> Include revoked keys</label>
			<button type="submit">Search</button></form>
			<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="usage chart">`),
		"/unlabelled": page("Keys", `<form method="post" action="/unlabelled">
			<input id="q" name="q" type="text"><button type="submit">Search</button></form>`),
		"/noalt":     page("Keys", `<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">`),
		"/nameless":  page("Keys", `<form method="post" action="/nameless"><button type="submit"></button></form>`),
		"/contrast":  page("Keys", `<p class="faint">Revoked keys stop working at once.</p>`, "/faint.css"),
		"/faint.css": `.faint { color: #bbb; background: #fff; }`,
		// Inline script and style, which the CSP forbids: the page must
		// look as if neither were there, or the tests below would not be
		// testing against a strict CSP.
		"/inline": page("Keys", `<p id="p">unchanged</p><style>#p { display: none }</style>
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
