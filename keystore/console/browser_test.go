package console_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/keygate/keygate/internal/browsertest"
	"github.com/keygate/keygate/internal/redistest"
)

// screenshotDir is where KEYGATE_SCREENSHOTS=1 writes the pages the README
// shows; without it no file is written, so that make test leaves the tree
// as it was.
const screenshotDir = "../../docs/console"

// The buttons that change something, which a read token must not see.
var mutatingButtons = []string{"Create key", "Create a key", "Revoke", "Roll", "Disable", "Enable",
	"Revoke every key of a subject", "Revoke all keys of the subject"}

// inspect checks the page the tab shows with axe-core, in light and dark,
// and at a phone's width; with KEYGATE_SCREENSHOTS set it also writes its
// screenshot as file.
func inspect(t *testing.T, ctx context.Context, name, file string) {
	t.Helper()
	browsertest.CheckAccessible(t, ctx, name)
	browsertest.SetColorScheme(t, ctx, "dark")
	browsertest.CheckAccessible(t, ctx, name+" (dark)")
	browsertest.SetColorScheme(t, ctx, "")
	browsertest.CheckNoSidewaysScroll(t, ctx)
	if file != "" && os.Getenv("KEYGATE_SCREENSHOTS") != "" {
		browsertest.Screenshot(t, ctx, filepath.Join(screenshotDir, file))
	}
}

// phoneShot writes, with KEYGATE_SCREENSHOTS set, a screenshot of the
// page as a phone in the dark shows it.
func phoneShot(t *testing.T, ctx context.Context, file string) {
	t.Helper()
	if os.Getenv("KEYGATE_SCREENSHOTS") == "" {
		return
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(browsertest.PhoneWidth, browsertest.PhoneHeight, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	browsertest.SetColorScheme(t, ctx, "dark")
	browsertest.Screenshot(t, ctx, filepath.Join(screenshotDir, file))
	browsertest.SetColorScheme(t, ctx, "")
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(browsertest.ViewportWidth, browsertest.ViewportHeight)); err != nil {
		t.Fatal(err)
	}
}

// fieldValue reads the value of the field labelled label.
func fieldValue(t *testing.T, ctx context.Context, label string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		const l = Array.from(document.querySelectorAll("label")).find(l => l.textContent.trim() === `+jsString(label)+`);
		return l && l.control ? l.control.value : "";
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func jsString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// auditRow is a row of an audit events table, as the browser shows it.
type auditRow struct{ Action, Actor string }

// auditRows reads the rows of the page's audit events table: its Action
// cell, and the first line of its Actor cell (the token's name).
func auditRows(t *testing.T, ctx context.Context) []auditRow {
	t.Helper()
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]auditRow](`Array.from(document.querySelectorAll("table.list tbody tr")).map(tr => ({
		Action: ((tr.querySelector('td[data-label="Action"]') || {}).textContent || "").trim(),
		Actor: ((tr.querySelector('td[data-label="Actor"]') || {}).innerText || "").split("\n")[0].trim(),
	}))`))
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func hasRow(rows []auditRow, action, actor string) bool {
	for _, r := range rows {
		if r.Action == action && r.Actor == actor {
			return true
		}
	}
	return false
}

func mustText(t *testing.T, ctx context.Context, want ...string) string {
	t.Helper()
	text := browsertest.PageText(t, ctx)
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Fatalf("the page does not say %q:\n%s", w, text)
		}
	}
	return text
}

// TestBrowser drives the console in headless Chromium against the admin
// API, the console and /forward-auth on a real redis-server, as an
// operator would: sign in, create a key and see its secret once, disable,
// enable, roll and revoke it (after which /forward-auth refuses it), bulk
// revoke, read the audit log, a form without its CSRF token, an expired
// session; and a read token that is offered no change and is refused a
// forged one. Every page is checked with axe-core, light and dark, and at
// 390×844.
func TestBrowser(t *testing.T) {
	rdb := redistest.Server(t)
	e := newEnv(t, rdb)
	seeded := e.createKey(t, "reports-service", "org_acme")
	for range 5 {
		e.forwardAuth(t, seeded.Secret)
	}
	e.createKey(t, "billing-job", "org_acme")
	e.createKey(t, "mobile-app", "user_1234")
	if err := e.store.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.store.FlushLastUsed(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := browsertest.New(t)
	ctx := b.Tab(t)

	// Sign in: a wrong token first.
	browsertest.Navigate(t, ctx, e.srv.URL+"/console/")
	mustText(t, ctx, "Sign in", "Admin token")
	inspect(t, ctx, "sign-in", "sign-in.png")
	browsertest.Fill(t, ctx, "Admin token", "wrong-token-0123456789abcdef0123456789")
	if resp := browsertest.Submit(t, ctx, "Sign in"); resp.Status != http.StatusUnauthorized {
		t.Fatalf("a wrong token: %d\n%s", resp.Status, browsertest.PageText(t, ctx))
	}
	mustText(t, ctx, "not an admin token")
	inspect(t, ctx, "sign-in refused", "")
	browsertest.Fill(t, ctx, "Admin token", adminTok.Token)
	browsertest.Submit(t, ctx, "Sign in")
	mustText(t, ctx, "Signed in as ops", "reports-service", "billing-job", "mobile-app")
	inspect(t, ctx, "keys", "keys.png")

	// Search and filter.
	browsertest.Fill(t, ctx, "Subject", "org_acme")
	browsertest.Submit(t, ctx, "Search")
	if text := mustText(t, ctx, "reports-service", "billing-job"); strings.Contains(text, "mobile-app") {
		t.Fatal("the subject filter shows another subject's key")
	}

	// A key's page, with its usage chart.
	browsertest.Submit(t, ctx, "reports-service")
	mustText(t, ctx, "Fields", "Usage", "5 verifications admitted", "Limits and credits", "Audit trail")
	inspect(t, ctx, "key", "key.png")
	phoneShot(t, ctx, "key-phone-dark.png")

	// Create a key: its secret is shown once.
	browsertest.Submit(t, ctx, "Keys")
	browsertest.Submit(t, ctx, "Create a key")
	inspect(t, ctx, "create", "")
	browsertest.Fill(t, ctx, "Name", "browser-made")
	browsertest.Fill(t, ctx, "Subject", "org_browser")
	browsertest.Fill(t, ctx, "Scopes (optional)", "reports:read")
	browsertest.Fill(t, ctx, "Credits (optional)", "1000")
	browsertest.Submit(t, ctx, "Create key")
	mustText(t, ctx, "New key: browser-made", "shown this once")
	secret := fieldValue(t, ctx, "Secret")
	if !strings.HasPrefix(secret, "ak_") {
		t.Fatalf("the secret field holds %q", secret)
	}
	if !slices.Contains(browsertest.Buttons(t, ctx), "Copy secret") {
		t.Errorf("no Copy secret button: %v", browsertest.Buttons(t, ctx))
	}
	inspect(t, ctx, "new secret", "created.png")
	if code := e.forwardAuth(t, secret); code != 200 {
		t.Fatalf("forward-auth with the new secret: %d", code)
	}
	browsertest.Navigate(t, ctx, e.srv.URL+"/console/secret") // a reload
	if text := mustText(t, ctx, "Secret no longer shown"); strings.Contains(text, secret) || fieldValue(t, ctx, "Secret") != "" {
		t.Fatal("the secret is shown again after a reload")
	}
	inspect(t, ctx, "secret gone", "")

	// Disable and enable it.
	browsertest.Navigate(t, ctx, e.srv.URL+"/console/keys?query=browser-made")
	browsertest.Submit(t, ctx, "browser-made")
	browsertest.Submit(t, ctx, "Disable")
	mustText(t, ctx, "The key is disabled")
	if code := e.forwardAuth(t, secret); code != 401 {
		t.Fatalf("forward-auth with a disabled key: %d", code)
	}
	browsertest.Submit(t, ctx, "Enable")
	mustText(t, ctx, "The key is enabled")
	if code := e.forwardAuth(t, secret); code != 200 {
		t.Fatalf("forward-auth after enable: %d", code)
	}

	// Roll it, the old key revoked at once.
	browsertest.Fill(t, ctx, "The old key keeps working for", "Revoke the old key now")
	browsertest.SetChecked(t, ctx, `Yes, revoke the old key at once (needed for "Revoke the old key now")`, true)
	browsertest.Submit(t, ctx, "Roll")
	mustText(t, ctx, "New key: browser-made", "It replaces")
	rolled := fieldValue(t, ctx, "Secret")
	if !strings.HasPrefix(rolled, "ak_") || rolled == secret {
		t.Fatalf("the rolled key's secret: %q", rolled)
	}
	if code := e.forwardAuth(t, secret); code != 401 {
		t.Fatalf("forward-auth with the rolled-away key: %d", code)
	}

	// Revoke the new key with a reason.
	browsertest.Submit(t, ctx, "Go to the key")
	browsertest.Fill(t, ctx, "Reason", "leaked in a browser test")
	browsertest.SetChecked(t, ctx, "Yes, revoke this key now", true)
	browsertest.Submit(t, ctx, "Revoke")
	mustText(t, ctx, "The key is revoked", "leaked in a browser test", "api_key.revoked")
	if code := e.forwardAuth(t, rolled); code != 401 {
		t.Fatalf("forward-auth after revoke: %d, want 401", code)
	}
	inspect(t, ctx, "revoked key", "")

	// Bulk revoke a subject.
	browsertest.Navigate(t, ctx, e.srv.URL+"/console/keys")
	browsertest.Submit(t, ctx, "Revoke every key of a subject")
	inspect(t, ctx, "bulk revoke", "")
	browsertest.Fill(t, ctx, "Subject", "user_1234")
	browsertest.Fill(t, ctx, "Reason", "account closed")
	browsertest.SetChecked(t, ctx, "Yes, revoke every key of this subject now", true)
	browsertest.Submit(t, ctx, "Revoke all keys of the subject")
	mustText(t, ctx, "Revoked 1 key of user_1234")

	// The audit log, filtered.
	browsertest.Submit(t, ctx, "Audit log")
	rows := auditRows(t, ctx)
	for _, action := range []string{"api_key.created", "api_key.disabled", "api_key.enabled", "api_key.rolled",
		"api_key.revoked", "api_key.bulk_revoked"} {
		if !hasRow(rows, action, "ops") {
			t.Errorf("the audit log has no %s row by ops: %v", action, rows)
		}
	}
	inspect(t, ctx, "audit log", "audit.png")
	browsertest.Fill(t, ctx, "Action", "api_key.disabled")
	browsertest.Submit(t, ctx, "Filter events")
	rows = auditRows(t, ctx)
	if len(rows) == 0 {
		t.Fatal("the action filter shows no event")
	}
	for _, r := range rows {
		if r.Action != "api_key.disabled" {
			t.Fatalf("the action filter api_key.disabled shows a %s event: %v", r.Action, rows)
		}
	}

	// A form whose CSRF token was taken out is refused, and changes nothing.
	browsertest.Navigate(t, ctx, e.srv.URL+"/console/keys/"+seeded.ID)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](
		`(() => { document.querySelectorAll('input[name="csrf"]').forEach(i => i.remove()); return true; })()`)); err != nil {
		t.Fatal(err)
	}
	if resp := browsertest.Submit(t, ctx, "Disable"); resp.Status != http.StatusForbidden {
		t.Fatalf("a form without its CSRF token: %d, want 403", resp.Status)
	}
	mustText(t, ctx, "security token")
	inspect(t, ctx, "CSRF refusal", "")
	if !e.key(t, seeded.ID).Enabled {
		t.Fatal("a form without its CSRF token disabled the key")
	}

	// A read token: no control that changes anything, and a forged form is
	// refused by the admin API's role check.
	rctx := b.Tab(t)
	browsertest.Navigate(t, rctx, e.srv.URL+"/console/sign-in")
	browsertest.Fill(t, rctx, "Admin token", readTok.Token)
	browsertest.Submit(t, rctx, "Sign in")
	mustText(t, rctx, "Signed in as auditor")
	for _, path := range []string{"/console/keys", "/console/keys/" + seeded.ID, "/console/audit"} {
		browsertest.Navigate(t, rctx, e.srv.URL+path)
		for _, name := range browsertest.Buttons(t, rctx) {
			if slices.Contains(mutatingButtons, name) {
				t.Errorf("%s offers the read token %q", path, name)
			}
		}
	}
	inspect(t, rctx, "key as read", "")
	forge := `(() => {
		const f = document.createElement("form");
		f.method = "post";
		f.action = "/console/keys/` + seeded.ID + `/revoke";
		for (const [n, v] of [["csrf", document.querySelector('input[name="csrf"]').value], ["confirm", "yes"]]) {
			const i = document.createElement("input"); i.type = "hidden"; i.name = n; i.value = v; f.appendChild(i);
		}
		const b = document.createElement("button"); b.textContent = "Forged revoke"; f.appendChild(b);
		document.querySelector("main").appendChild(f);
		return true;
	})()`
	if _, err := chromedp.Run(rctx, chromedp.Evaluate[bool](forge)); err != nil {
		t.Fatal(err)
	}
	if resp := browsertest.Submit(t, rctx, "Forged revoke"); resp.Status != http.StatusForbidden {
		t.Fatalf("a forged revoke by a read token: %d, want 403", resp.Status)
	}
	mustText(t, rctx, "has the role read")
	inspect(t, rctx, "role refusal", "")
	if e.key(t, seeded.ID).Revoked {
		t.Fatal("a read token revoked the key")
	}

	// An expired session goes back to sign-in. Redis expires it; here it
	// is deleted, as its expiry would, rather than waited for.
	for _, k := range e.sessionKeys(t) {
		if err := rdb.Del(context.Background(), k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	browsertest.Navigate(t, ctx, e.srv.URL+"/console/keys")
	mustText(t, ctx, "Your session has ended", "Admin token")
	inspect(t, ctx, "expired session", "")

	// Sign out.
	browsertest.Fill(t, ctx, "Admin token", adminTok.Token)
	browsertest.Submit(t, ctx, "Sign in")
	browsertest.Submit(t, ctx, "Sign out")
	mustText(t, ctx, "Admin token")
	browsertest.Navigate(t, ctx, e.srv.URL+"/console/keys")
	mustText(t, ctx, "Admin token")
	if k, err := e.store.Get(context.Background(), seeded.ID); err != nil || k.Revoked {
		t.Fatalf("the seeded key at the end: %+v %v", k, err)
	}
}
