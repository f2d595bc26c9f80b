package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testkit"
)

// TestRequestIDsAgree runs serve and the sidecar as processes and checks
// that each request has one ID: the X-Request-Id response header, the
// error body's clerk_trace_id, the log line about the request and, through
// the sidecar, the X-Request-Id the upstream got. A client's own sane
// X-Request-Id is kept.
func TestRequestIDsAgree(t *testing.T) {
	redis := redistest.Start(t)
	var upstreamIDs = make(chan string, 10)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamIDs <- r.Header.Get("X-Request-Id")
		w.Header().Set("X-Request-Id", "the-upstream-own-id")
		io.WriteString(w, "ok")
	}))
	defer upstream.Close()
	const token = "kg-admin-request-ids-0123456789abcdef"
	addr, proxyAddr, opsAddr := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t)
	env := []string{"KEYGATE_REDIS_URL=redis://" + redis.Addr, "KEYGATE_ADMIN_TOKENS=" + token, "KEYGATE_ADMIN_TOKEN=" + token,
		"KEYGATE_URL=http://" + addr, "KEYGATE_LOG_LEVEL=debug", "KEYGATE_LOG_FORMAT=json"}
	serve := start(t, env, "http://"+addr+"/readyz", "serve", "--listen", addr)
	side := start(t, env, "http://"+opsAddr+"/readyz", "sidecar", "--upstream", upstream.URL, "--listen", proxyAddr, "--ops-listen", opsAddr)
	key := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "svc", "--subject", "org_9", "--json"))

	for _, tc := range []struct {
		name, url, auth, clientID string
		status                    int
		p                         *proc
		logMsg                    string
		upstream                  bool
	}{
		{"admin API, wrong token", "http://" + addr + "/v1/api_keys", "Bearer wrong", "", 401, serve, "admin api request", false},
		{"admin API, client's ID", "http://" + addr + "/v1/api_keys/ak_00000000000000000000000000000000", "Bearer " + token, "client-id-7", 404, serve, "admin api request", false},
		{"forward-auth, no key", "http://" + addr + "/forward-auth", "", "", 401, serve, "forward-auth request", false},
		{"forward-auth, client's ID", "http://" + addr + "/forward-auth", "Bearer ak_bad", "client-id-8", 401, serve, "forward-auth request", false},
		{"sidecar, no key", "http://" + proxyAddr + "/x", "", "", 401, side, "sidecar request", false},
		{"sidecar, valid key", "http://" + proxyAddr + "/x", "Bearer " + key.Secret, "", 200, side, "sidecar request", true},
		{"sidecar, valid key, client's ID", "http://" + proxyAddr + "/x", "Bearer " + key.Secret, "client-id-9", 200, side, "sidecar request", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tc.url, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.clientID != "" {
				req.Header.Set("X-Request-Id", tc.clientID)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tc.status)
			}
			ids := resp.Header.Values("X-Request-Id")
			if len(ids) != 1 || ids[0] == "" {
				t.Fatalf("X-Request-Id %q, want one", ids)
			}
			id := ids[0]
			if tc.clientID != "" && id != tc.clientID {
				t.Errorf("X-Request-Id %q, want the client's %q", id, tc.clientID)
			}
			if resp.StatusCode >= 400 {
				var e struct {
					TraceID string `json:"clerk_trace_id"`
				}
				if err := json.Unmarshal(body, &e); err != nil || e.TraceID != id {
					t.Errorf("clerk_trace_id %q (%v), want %q", e.TraceID, err, id)
				}
			}
			if tc.upstream {
				if got := <-upstreamIDs; got != id {
					t.Errorf("the upstream got X-Request-Id %q, want %q", got, id)
				}
			}
			// The log line is written once the response is: wait for it.
			deadline := time.Now().Add(10 * time.Second)
			for !logged(tc.p.stderr.String(), tc.logMsg, id) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q log line with request_id %q in:\n%s", tc.logMsg, id, tc.p.stderr)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// logged reports whether the JSON log holds a line msg whose request_id
// is id.
func logged(log, msg, id string) bool {
	for _, line := range strings.Split(log, "\n") {
		var l struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg && l.RequestID == id {
			return true
		}
	}
	return false
}
