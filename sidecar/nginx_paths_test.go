package sidecar

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
)

// TestNginxRemovesSpoofedHeaders: the documented nginx configuration
// lets none of a client's identity and forwarding headers through. nginx
// drops the names with "_" (its defaults, which the configuration states)
// and replaces the others.
func TestNginxRemovesSpoofedHeaders(t *testing.T) { proxyRemovesSpoofed(t, startNginx) }

// TestNginxPathForms sends the path forms of TestProxyPathForms through
// the documented nginx configuration (whose /reports location needs
// reports:read and whose /public/ location needs nothing) to an app that
// routes them as each framework of that test would: no request reaches
// the reports without the scope, or anything but the public location
// without a key. nginx refuses more forms than the sidecar (it cannot
// tell when a form matters), so only the plain forms' statuses are
// checked.
func TestNginxPathForms(t *testing.T) { proxyPathForms(t, "nginx", startNginx) }

// proxyPathForms runs the path forms through the proxy that start starts
// with its documented configuration.
func proxyPathForms(t *testing.T, proxy string, start func(t *testing.T, keygate, app string) string) {
	_, rdb := redistest.Mini(t)
	e := newEnv(t, rdb)
	reader := e.create(t, keystore.CreateParams{Scopes: []string{"read"}})
	scoped := e.create(t, keystore.CreateParams{Scopes: []string{"reports:read"}})
	keygate := httptest.NewServer(forwardAuthMux(t, e, ForwardAuthOptions{}))
	t.Cleanup(keygate.Close)
	app := newRoutingUpstream(t)
	base := start(t, strings.TrimPrefix(keygate.URL, "http://"), strings.TrimPrefix(app.URL, "http://"))
	addr := strings.TrimPrefix(base, "http://")

	plain := map[string][3]int{ // no key, reader, scoped
		"/reports/x":     {401, 403, 200},
		"/REPORTS/x":     {401, 403, 200},
		"/reports;a=b/x": {401, 403, 200},
		"/reports":       {401, 403, 200},
		"/public/x":      {200, 200, 200},
		"/app/x":         {401, 200, 200},
		"/%72eports/x":   {400, 400, 400},
		"/public/%41":    {400, 400, 400},
		"/public/x;y=1":  {200, 200, 200},
	}
	for _, tc := range pathForms {
		t.Run(tc.target, func(t *testing.T) {
			for _, f := range frameworks {
				statuses := [3]int{}
				for i, secret := range []string{"", reader.Secret, scoped.Secret} {
					hdr := http.Header{"X-Test-Framework": {f.name}}
					if secret != "" {
						hdr.Set("Authorization", "Bearer "+secret)
					}
					statuses[i] = rawGet(t, addr, tc.target, hdr)
				}
				if want, ok := plain[tc.target]; ok && statuses != want {
					t.Errorf("%s: statuses (no key, reader, scoped) %v, want %v", f.name, statuses, want)
				}
			}
		})
	}
	t.Logf("%d path forms through %s, %d requests reached the app, %d bypasses", len(pathForms), proxy, len(app.hits), app.bypasses(t))
}
