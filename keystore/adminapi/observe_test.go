package adminapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/testkit"
)

// TestLogsAndMetricsCarryNoSecrets runs a key's life, with mistakes a user
// makes (a secret pasted as an ID, a wrong admin token), and checks the one
// log line per request and the metric labels: no secret, no admin token,
// no key ID in a label.
func TestLogsAndMetricsCarryNoSecrets(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, fullKey)
	wrongToken := adminToken + "-but-wrong"
	reqs := []struct {
		method, path, body string
		headers            []string
		status             int
		keyID              string // the key_id the log line must carry, "" for none
	}{
		{"GET", "/api_keys/" + k.ID, "", nil, 200, k.ID},
		{"GET", "/v1/api_keys/" + k.ID, "", nil, 200, k.ID},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret), nil, 200, k.ID},
		{"GET", "/api_keys/" + k.Secret, "", nil, 404, ""},
		{"PATCH", "/api_keys/" + k.Secret, `{"description":"x"}`, nil, 404, ""},
		{"GET", "/api_keys/" + k.ID + "/secret", "", nil, 404, k.ID},
		{"GET", "/api_keys?query=" + k.Secret, "", nil, 200, ""},
		{"GET", "/api_keys", "", []string{"Authorization", "Bearer " + wrongToken}, 401, ""},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret), []string{"Authorization", "Bearer " + wrongToken}, 401, ""},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q,"extra":1}`, k.Secret), nil, 400, ""},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q`, k.Secret), nil, 400, ""},
		{"POST", "/api_keys/" + k.ID + "/revoke", `{"revocation_reason":"rotated"}`, nil, 200, k.ID},
		{"POST", "/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, k.Secret), nil, 404, k.ID},
		{"PUT", "/api_keys/" + k.ID, "", nil, 405, ""},
		{"DELETE", "/api_keys/" + k.ID, "", nil, 200, k.ID},
	}
	logStart := len(e.logs.String())
	for _, r := range reqs {
		rec := e.do(r.method, r.path, r.body, r.headers...)
		if rec.Code != r.status {
			t.Fatalf("%s %s: %d, want %d: %s", r.method, r.path, rec.Code, r.status, rec.Body)
		}
		if r.status != 200 && strings.Contains(rec.Body.String(), k.Secret) {
			t.Errorf("%s %s: the error body carries the secret: %s", r.method, r.path, rec.Body)
		}
		for _, tok := range []string{adminToken, wrongToken} {
			if strings.Contains(rec.Body.String(), tok) {
				t.Errorf("%s %s: the body carries an admin token: %s", r.method, r.path, rec.Body)
			}
		}
	}

	logs := e.logs.String()[logStart:]
	for _, s := range []string{k.Secret, adminToken, wrongToken, k.Secret[len(k.Secret)-20:]} {
		if strings.Contains(logs, s) {
			t.Fatalf("the log carries %q:\n%s", s, logs)
		}
	}
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if m["msg"] == "admin api request" {
			lines = append(lines, m)
		}
	}
	if len(lines) != len(reqs) {
		t.Fatalf("%d request log lines for %d requests:\n%s", len(lines), len(reqs), logs)
	}
	for i, r := range reqs {
		l := lines[i]
		if l["method"] != r.method || l["status"] != float64(r.status) || l["request_id"] == "" || l["route"] == "" {
			t.Errorf("log line for %s %s: %v", r.method, r.path, l)
		}
		if _, ok := l["duration"]; !ok {
			t.Errorf("log line for %s %s has no duration: %v", r.method, r.path, l)
		}
		if got, _ := l["key_id"].(string); got != r.keyID {
			t.Errorf("log line for %s %s: key_id %q, want %q", r.method, r.path, got, r.keyID)
		}
	}

	mfs, err := e.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				for _, s := range []string{"ak_", adminToken, testSubject} {
					if strings.Contains(lp.GetValue(), s) {
						t.Errorf("metric %s has label %s=%q", mf.GetName(), lp.GetName(), lp.GetValue())
					}
				}
				if mf.GetName() == "keygate_admin_requests_total" && lp.GetName() == "route" {
					routes[lp.GetValue()] = true
				}
			}
		}
	}
	for _, want := range []string{"GET /api_keys/{id}", "POST /api_keys/verify", "GET /api_keys/{id}/secret", "/api_keys/{id}", "DELETE /api_keys/{id}"} {
		if !routes[want] {
			t.Errorf("no keygate_admin_requests_total with route %q; have %v", want, routes)
		}
	}
	// Both prefixes count under one pattern; 401s count under their route.
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"GET /api_keys/{id}", "200", 2},
		{"GET /api_keys/{id}", "404", 1},
		{"POST /api_keys/verify", "200", 1},
		{"POST /api_keys/verify", "401", 1},
		{"POST /api_keys/verify", "400", 2},
		{"POST /api_keys/verify", "404", 1},
		{"GET /api_keys", "401", 1},
		{"/api_keys/{id}", "405", 1},
	} {
		if got := testkit.MetricValue(t, e.registry, "keygate_admin_requests_total", map[string]string{"route": c.route, "code": c.code}); got != c.want {
			t.Errorf("keygate_admin_requests_total{route=%q,code=%q} = %v, want %v", c.route, c.code, got, c.want)
		}
	}
}

// TestRequestID checks that the request's X-Request-Id becomes
// clerk_trace_id, and that a request without one gets a fresh one.
func TestRequestID(t *testing.T) {
	e := newEnv(t)
	rec := e.do("GET", "/api_keys/"+unknownID, "", "X-Request-Id", "abc-123")
	if got := decodeError(t, rec); got.TraceID != "abc-123" || got.RequestHdr != "abc-123" {
		t.Fatalf("trace %q, header %q", got.TraceID, got.RequestHdr)
	}
	a := decodeError(t, e.do("GET", "/api_keys/"+unknownID, ""))
	b := decodeError(t, e.do("GET", "/api_keys/"+unknownID, "", "X-Request-Id", "bad id with spaces"))
	if a.TraceID == "" || a.TraceID == b.TraceID || strings.Contains(b.TraceID, " ") || a.TraceID != a.RequestHdr {
		t.Fatalf("generated trace IDs %q and %q", a.TraceID, b.TraceID)
	}
	if !strings.Contains(e.logs.String(), `"request_id":"abc-123"`) {
		t.Fatalf("the log lacks the request ID:\n%s", e.logs)
	}
}
