package browsertest

import (
	"context"
	"testing"

	"github.com/chromedp/cdproto/network"
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
