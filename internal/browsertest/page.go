package browsertest

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Navigate opens url in ctx's tab, waits until the page has loaded, and
// returns the HTTP response of the document (its Status, for example). It
// fails the test when the page cannot be loaded at all; an HTTP error status
// is a loaded page, for the caller to check.
func Navigate(t testing.TB, ctx context.Context, url string) *network.Response {
	t.Helper()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("browsertest: opening %s: %v", url, err)
	}
	return resp
}

// PageText returns the text of the page as a person sees it: the rendered
// text of the body (innerText), without hidden elements, markup or scripts.
func PageText(t testing.TB, ctx context.Context) string {
	t.Helper()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		t.Fatalf("browsertest: reading the page's text: %v", err)
	}
	return text
}

// AcceptDialogs answers every JavaScript dialog the tab opens from now on
// (alert, confirm, prompt, beforeunload) with OK, as a person confirming
// would; without it a confirm() blocks the page and the test times out. It
// returns a func that lists the messages of the dialogs answered so far, for
// the test to check that it was asked.
func AcceptDialogs(t testing.TB, ctx context.Context) func() []string {
	t.Helper()
	var (
		mu       sync.Mutex
		messages []string
	)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening) // subscribed now
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return // the tab is closed
			}
			mu.Lock()
			messages = append(messages, ev.Message)
			mu.Unlock()
			// An error here means the tab went away; the test's own
			// actions report that.
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(messages)
	}
}
