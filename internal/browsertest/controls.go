package browsertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The helpers below find controls the way a person (or a screen reader)
// does: by their accessible name, which Chromium computes from the page
// (Accessibility.queryAXTree). A field's name is the text of its <label>
// (label for=, or the label around it) or its aria-label; a button's is its
// text, or its value for <input type=submit>; a link's is its text. Names
// match exactly, with whitespace collapsed as the browser does. Hidden
// controls have no accessible node and are never found.

// findTimeout bounds the wait for a control to appear: the console's pages
// are rendered by the server, so a control that is not there after this long
// is not coming. (A variable so that this package's tests of the failure
// messages need not wait as long.)
var findTimeout = 10 * time.Second

// Roles (as Chromium names them) of the controls each helper acts on.
var (
	pressRoles = []string{"button", "link", "DisclosureTriangle"} // the last: <summary>
	fieldRoles = []string{
		"textbox", "searchbox", "spinbutton", "combobox", "listbox", "slider",
		"Date", "DateTime", "InputTime", "ColorWell",
	}
	checkRoles = []string{"checkbox", "radio", "switch"}
)

// axNode is what the helpers need of an accessibility node.
type axNode struct {
	role, name string
	backend    cdp.BackendNodeID
}

// queryAX returns the accessible nodes in the page that are not ignored
// (hidden ones are), with the name (any name if name is "") and one of the
// roles, in document order. It leaves out the browser's own parts of
// controls, such as a date field's "Show date picker" button.
func queryAX(ctx context.Context, t *chromedp.Target, name string, roles []string) ([]axNode, error) {
	doc, err := chromedp.Evaluate[*runtime.RemoteObject](`document`)(ctx, t)
	if err != nil {
		return nil, err
	}
	defer release(ctx, t, doc.ObjectID)
	res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{ObjectID: doc.ObjectID, AccessibleName: name})
	if err != nil {
		return nil, err
	}
	var found []axNode
	for _, n := range res.Nodes {
		if n.Ignored || n.BackendDOMNodeID == 0 {
			continue
		}
		role := axString(n.Role)
		if !slices.Contains(roles, role) {
			continue
		}
		// A control's own parts live in its user-agent shadow root.
		inPage, err := callOnBackend[bool](ctx, t, n.BackendDOMNodeID, `function() { return this.getRootNode() === document; }`)
		if err != nil {
			return nil, err
		}
		if inPage {
			found = append(found, axNode{role: role, name: axString(n.Name), backend: n.BackendDOMNodeID})
		}
	}
	return found, nil
}

func axString(v *accessibility.Value) string {
	if v == nil || len(v.Value) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal([]byte(v.Value), &s) != nil {
		return ""
	}
	return s
}

// byName is a chromedp query option that selects the elements whose
// accessible name is name and whose role is one of roles, in document
// order; the query waits (retries) until there is at least one.
func byName(name string, roles []string) chromedp.QueryOption {
	return chromedp.ByFunc(func(ctx context.Context, t *chromedp.Target, _ *chromedp.Node) ([]cdp.NodeID, error) {
		found, err := queryAX(ctx, t, name, roles)
		if err != nil || len(found) == 0 {
			return nil, err
		}
		backend := make([]cdp.BackendNodeID, len(found))
		for i, n := range found {
			backend[i] = n.backend
		}
		// Pushing the nodes makes Chromium send them (and their
		// ancestors) to chromedp, which then knows their NodeIDs.
		res, err := cdp.Call(ctx, t, dom.PushNodesByBackendIDsToFrontend, dom.PushNodesByBackendIDsToFrontendParams{BackendNodeIDs: backend})
		if err != nil {
			return nil, err
		}
		return res.NodeIDs, nil
	})
}

// find returns the node of the first control named name with one of roles,
// waiting up to findTimeout for it; what says what kind of control it is
// for the error, which lists the controls of that kind that the page has.
func find(ctx context.Context, what, name string, roles []string) (cdp.NodeID, error) {
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	ids, err := chromedp.Run(fctx, chromedp.QueryNodeIDs("", byName(name, roles)))
	if err == nil && len(ids) > 0 {
		return ids[0], nil
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("finding the %s named %q: %w", what, name, ctx.Err())
	}
	names, lerr := controlNames(ctx, roles)
	if lerr != nil {
		return 0, fmt.Errorf("no %s named %q (after %v): %v", what, name, findTimeout, lerr)
	}
	return 0, fmt.Errorf("no %s named %q (after %v); the page has: %s", what, name, findTimeout, quoteAll(names))
}

// controlNames lists the accessible names of the page's controls with one of
// roles, in document order.
func controlNames(ctx context.Context, roles []string) ([]string, error) {
	return chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) ([]string, error) {
		found, err := queryAX(ctx, t, "", roles)
		if err != nil {
			return nil, err
		}
		names := make([]string, len(found))
		for i, n := range found {
			names[i] = n.name
		}
		return names, nil
	})
}

func quoteAll(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// Buttons returns the accessible names of the buttons on the page (<button>,
// <input type=submit>, role=button), in document order; links are not
// buttons. A test can check what a user is offered, e.g. that a read-only
// user sees no "Revoke" button.
func Buttons(t testing.TB, ctx context.Context) []string {
	t.Helper()
	names, err := controlNames(ctx, []string{"button"})
	if err != nil {
		t.Fatalf("browsertest: listing the buttons: %v", err)
	}
	return names
}

// Click presses the button or follows the link named name (the first one, in
// document order, if several have that name), with a real mouse click. It
// does not wait for a page that the click may load: use [Submit] for that.
// It fails the test, listing the page's buttons and links, when there is no
// such control within 10 s.
func Click(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	id, err := find(ctx, "button or link", name, pressRoles)
	if err == nil {
		err = chromedp.Do(ctx, chromedp.Click(chromedp.NodeIDs{id}))
	}
	if err != nil {
		t.Fatalf("browsertest: clicking %q: %v", name, err)
	}
}

// Submit presses the button or follows the link named name, as [Click] does,
// waits until the page it loads has loaded, and returns that page's HTTP
// response (its Status, for example, is 403 for a refused form). A click that
// loads no page (a button that only runs a script) makes it wait until the
// tab's timeout; use Click for those.
func Submit(t testing.TB, ctx context.Context, name string) *network.Response {
	t.Helper()
	id, err := find(ctx, "button or link", name, pressRoles)
	if err != nil {
		t.Fatalf("browsertest: submitting with %q: %v", name, err)
	}
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.NodeIDs{id}))
	if err != nil {
		t.Fatalf("browsertest: submitting with %q: %v", name, err)
	}
	return resp
}

// fillJS sets the value of a field that is not typed into (a <select>, by an
// option's text or value; a date, time, colour or range input) and fires the
// events a person's change would; for a text field it clears it and answers
// "type", and the caller types the value with real key events.
const fillJS = `function(v) {
	if (this.tagName === "SELECT") {
		const o = Array.from(this.options).find(o => o.label === v || o.text.trim() === v || o.value === v);
		if (!o) {
			return "no option " + JSON.stringify(v) + "; the options are " +
				Array.from(this.options).map(o => JSON.stringify(o.label)).join(", ");
		}
		this.value = o.value;
	} else if (this.tagName === "INPUT" && ["date", "datetime-local", "time", "month", "week", "color", "range"].includes(this.type)) {
		this.value = v;
		if (this.value !== v) {
			return "the " + this.type + " field refused " + JSON.stringify(v);
		}
	} else if (this.tagName === "INPUT" || this.tagName === "TEXTAREA") {
		this.value = "";
		this.focus();
		return "type";
	} else {
		return "it is a " + this.tagName.toLowerCase() + ", not a field";
	}
	this.dispatchEvent(new Event("input", {bubbles: true}));
	this.dispatchEvent(new Event("change", {bubbles: true}));
	return "";
}`

// Fill sets the field whose label is label to value: it types into a text
// field (after clearing it) with real key events, picks the option whose text
// or value is value in a <select>, and sets a date, time, colour or range
// input. It fails the test, listing the page's fields, when there is no
// such field within 10 s.
func Fill(t testing.TB, ctx context.Context, label, value string) {
	t.Helper()
	if err := fill(ctx, label, value); err != nil {
		t.Fatalf("browsertest: filling %q: %v", label, err)
	}
}

func fill(ctx context.Context, label, value string) error {
	id, err := find(ctx, "field", label, fieldRoles)
	if err != nil {
		return err
	}
	res, err := callOn(ctx, id, fillJS, value)
	switch {
	case err != nil:
		return err
	case res == "type":
		return chromedp.Do(ctx, chromedp.SendKeys(chromedp.NodeIDs{id}, value))
	case res != "":
		return errors.New(res)
	}
	return nil
}

// SetChecked checks (on) or unchecks the checkbox, radio button or switch
// whose label is label, by clicking it if it is not already so.
func SetChecked(t testing.TB, ctx context.Context, label string, on bool) {
	t.Helper()
	id, err := find(ctx, "checkbox or radio button", label, checkRoles)
	if err == nil {
		var checked bool
		checked, err = callOnBool(ctx, id, `function() { return this.checked === true || this.getAttribute("aria-checked") === "true"; }`)
		if err == nil && checked != on {
			err = chromedp.Do(ctx, chromedp.Click(chromedp.NodeIDs{id}))
		}
	}
	if err != nil {
		t.Fatalf("browsertest: setting %q to %v: %v", label, on, err)
	}
}

// callOn calls the JavaScript function fn with the element id as this and
// returns its string result.
func callOn(ctx context.Context, id cdp.NodeID, fn string, args ...any) (string, error) {
	return callOnNode[string](ctx, id, fn, args...)
}

func callOnBool(ctx context.Context, id cdp.NodeID, fn string, args ...any) (bool, error) {
	return callOnNode[bool](ctx, id, fn, args...)
}

func callOnNode[T any](ctx context.Context, id cdp.NodeID, fn string, args ...any) (T, error) {
	return chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (T, error) {
		return callOnResolved[T](ctx, t, dom.ResolveNodeParams{NodeID: id}, fn, args...)
	})
}

func callOnBackend[T any](ctx context.Context, t *chromedp.Target, id cdp.BackendNodeID, fn string, args ...any) (T, error) {
	return callOnResolved[T](ctx, t, dom.ResolveNodeParams{BackendNodeID: id}, fn, args...)
}

func callOnResolved[T any](ctx context.Context, t *chromedp.Target, node dom.ResolveNodeParams, fn string, args ...any) (T, error) {
	var zero T
	obj, err := cdp.Call(ctx, t, dom.ResolveNode, node)
	if err != nil {
		return zero, err
	}
	defer release(ctx, t, obj.Object.ObjectID)
	return chromedp.CallFunctionOn[T](fn, func(p *runtime.CallFunctionOnParams) {
		p.ObjectID = obj.Object.ObjectID
	}, args...)(ctx, t)
}

// release lets the page free a JavaScript object the protocol held for us
// (it fails harmlessly if the page has gone).
func release(ctx context.Context, t *chromedp.Target, id runtime.RemoteObjectID) {
	_, _ = cdp.Call(ctx, t, runtime.ReleaseObject, runtime.ReleaseObjectParams{ObjectID: id})
}
