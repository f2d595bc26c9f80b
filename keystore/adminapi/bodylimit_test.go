package adminapi_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore/adminapi"
)

// TestOversizedBodies: a body over 64 KiB gets its 413 whether or not the
// client sends Expect: 100-continue, and whether its length is declared or
// chunked. A declared one is refused before any of it is read, so a client
// that waits for 100 Continue is told 413 instead (it never sends the
// body); an undeclared one is read up to the limit, and its 413 reaches the
// client before the connection closes.
func TestOversizedBodies(t *testing.T) {
	e := newEnv(t)
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	over := adminapi.MaxBodyBytes*3 + 7 // within what the server reads after its 413

	// raw sends the request head, then, when body is set, the body as the
	// client would (after 100 Continue when it asked for one), and returns
	// the interim and final status lines it read.
	raw := func(t *testing.T, head string, body []byte, chunked, expect bool) (interim, final string) {
		t.Helper()
		c := testkit.Dial(t, addr)
		defer c.Close()
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		send := func() {
			var b bytes.Buffer
			if chunked {
				for off := 0; off < len(body); off += 16 << 10 {
					n := min(16<<10, len(body)-off)
					fmt.Fprintf(&b, "%x\r\n%s\r\n", n, body[off:off+n])
				}
				b.WriteString("0\r\n\r\n")
			} else {
				b.Write(body)
			}
			go c.Write(b.Bytes()) // the server may answer before it reads it all
		}
		if body != nil && !expect {
			send()
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the answer: %v (interim %q)", err, interim)
			}
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "HTTP/1.1 100") {
				interim = line
				for l, _ := br.ReadString('\n'); strings.TrimSpace(l) != ""; l, _ = br.ReadString('\n') {
				}
				if body == nil {
					return interim, "" // asked for a body the client will not send
				}
				if body != nil && expect {
					send()
				}
				continue
			}
			return interim, line
		}
	}
	head := func(extra string) string {
		return "POST /v1/api_keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + adminToken +
			"\r\nContent-Type: application/json\r\n" + extra + "\r\n"
	}
	big := bytes.Repeat([]byte("x"), over)

	t.Run("declared, Expect: 100-continue: 413 and no 100 Continue", func(t *testing.T) {
		interim, final := raw(t, head(fmt.Sprintf("Content-Length: %d\r\nExpect: 100-continue\r\n", 11<<20)), nil, false, true)
		if interim != "" || !strings.HasPrefix(final, "HTTP/1.1 413") {
			t.Fatalf("got %q then %q, want 413 without 100 Continue", interim, final)
		}
	})
	t.Run("declared, without Expect", func(t *testing.T) {
		if _, final := raw(t, head(fmt.Sprintf("Content-Length: %d\r\n", over)), big, false, false); !strings.HasPrefix(final, "HTTP/1.1 413") {
			t.Fatalf("got %q, want 413", final)
		}
	})
	t.Run("chunked, Expect: 100-continue", func(t *testing.T) {
		interim, final := raw(t, head("Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n"), big, true, true)
		if !strings.HasPrefix(interim, "HTTP/1.1 100") || !strings.HasPrefix(final, "HTTP/1.1 413") {
			t.Fatalf("got %q then %q, want 100 Continue then 413", interim, final)
		}
	})
	t.Run("chunked, without Expect", func(t *testing.T) {
		if _, final := raw(t, head("Transfer-Encoding: chunked\r\n"), big, true, false); !strings.HasPrefix(final, "HTTP/1.1 413") {
			t.Fatalf("got %q, want 413", final)
		}
	})
	t.Run("11 MB through Go's client with Expect: 100-continue, 8 times", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
		for i := range 8 {
			req, _ := http.NewRequest("POST", srv.URL+"/v1/api_keys", bytes.NewReader(bytes.Repeat([]byte(" "), 11<<20)))
			req.Header.Set("Authorization", "Bearer "+adminToken)
			req.Header.Set("Expect", "100-continue")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("try %d: %v", i+1, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || !strings.Contains(string(b), "request_body_too_large") {
				t.Fatalf("try %d: %d %s, want 413 request_body_too_large", i+1, resp.StatusCode, b)
			}
		}
	})
	t.Run("a body at the limit is read", func(t *testing.T) {
		body := `{"name":"n","subject":"s","description":"` + strings.Repeat("d", 100) + `"}`
		body += strings.Repeat(" ", adminapi.MaxBodyBytes-len(body))
		if _, final := raw(t, head(fmt.Sprintf("Content-Length: %d\r\nExpect: 100-continue\r\n", len(body))), []byte(body), false, true); !strings.HasPrefix(final, "HTTP/1.1 200") {
			t.Fatalf("got %q, want 200", final)
		}
	})
}
