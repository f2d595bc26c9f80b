package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testclock"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/client"
	"github.com/redis/go-redis/v9"
)

const adminToken = "kg-client-test-token-93a1c7e05b2d9f48"

// served is a request as the server saw it.
type served struct {
	Method, Path, RawQuery, Body, ContentType, Authorization string
}

// server is the real admin API on a real loopback listener.
type server struct {
	url   string
	mr    *miniredis.Miniredis
	clock *testclock.Clock
	mu    sync.Mutex
	seen  []served
}

func newServer(t *testing.T) *server {
	mr, rdb := redistest.Mini(t)
	return newServerOn(t, mr, rdb)
}

func newServerOn(t *testing.T, mr *miniredis.Miniredis, rdb *redis.Client) *server {
	t.Helper()
	s := &server{mr: mr, clock: testclock.New()}
	store, verifier := keystoretest.New(t, rdb, keystore.Options{Now: s.clock.Now, LastUsedFlush: -1}, keystore.VerifierOptions{})
	h, err := adminapi.New(adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{adminToken},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, served{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Get("Content-Type"), r.Header.Get("Authorization")})
		s.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func (s *server) last() served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[len(s.seen)-1]
}

func newClient(t *testing.T, base string) *client.Client {
	t.Helper()
	c, err := client.New(base, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLifecycle(t *testing.T) {
	for _, suffix := range []string{"", "/", "/v1", "/v1/"} {
		t.Run("base"+suffix, func(t *testing.T) {
			s := newServer(t)
			c := newClient(t, s.url+suffix)
			wantPrefix := strings.TrimSuffix(suffix, "/") + "/api_keys"
			ctx := context.Background()

			desc, exp := "deploys", int64(3600)
			key, err := c.Create(ctx, keystore.CreateParams{Name: "CI", Subject: "user_42", Description: &desc,
				Claims: json.RawMessage(`{"team":"infra"}`), Scopes: []string{"deploy:write"}, SecondsUntilExpiration: &exp})
			if err != nil {
				t.Fatal(err)
			}
			now := s.clock.Now().UnixMilli()
			if !strings.HasPrefix(key.Secret, "ak_") || key.Subject != "user_42" || *key.Expiration != now+3600_000 ||
				string(key.Claims) != `{"team":"infra"}` || key.Scopes[0] != "deploy:write" {
				t.Fatalf("created %+v", key)
			}
			if got := s.last(); got.Method != "POST" || got.Path != wantPrefix || got.ContentType != "application/json" ||
				got.Authorization != "Bearer "+adminToken {
				t.Fatalf("create sent %+v", got)
			}
			for i := 0; i < 4; i++ {
				s.clock.Advance(time.Millisecond)
				if _, err := c.Create(ctx, keystore.CreateParams{Name: "more", Subject: "user_42"}); err != nil {
					t.Fatal(err)
				}
			}

			list, err := c.List(ctx, keystore.ListParams{Subject: "user_42", Query: "CI", Limit: 5})
			if err != nil || list.TotalCount != 1 || list.Data[0].ID != key.ID {
				t.Fatalf("List = %+v, %v", list, err)
			}
			page, err := c.GetAll(ctx, keystore.GetAllParams{Subject: "user_42", InitialPage: 3, PageSize: 2})
			if err != nil || page.TotalCount != 5 || len(page.Data) != 1 || page.Data[0].ID != key.ID {
				t.Fatalf("GetAll page 3 = %+v, %v", page, err)
			}
			if got := s.last(); got.RawQuery != "limit=2&offset=4&subject=user_42" {
				t.Fatalf("GetAll sent query %q", got.RawQuery)
			}

			got, err := c.Get(ctx, key.ID)
			if err != nil || got.ID != key.ID || got.Secret != "" {
				t.Fatalf("Get = %+v, %v", got, err)
			}

			s.clock.Advance(time.Second)
			scopes := []string{}
			got, err = c.Update(ctx, key.ID, keystore.UpdateParams{Subject: "user_42", Description: new(""),
				Claims: json.RawMessage("null"), Scopes: &scopes, NeverExpires: true})
			if err != nil || got.Description != nil || got.Claims != nil || len(got.Scopes) != 0 || got.Expiration != nil {
				t.Fatalf("Update clearing everything = %+v, %v", got, err)
			}
			if sent := s.last().Body; sent != `{"claims":null,"description":"","scopes":[],"seconds_until_expiration":null,"subject":"user_42"}` {
				t.Fatalf("Update sent %s", sent)
			}
			secs := int64(60)
			got, err = c.Update(ctx, key.ID, keystore.UpdateParams{SecondsUntilExpiration: &secs})
			if err != nil || *got.Expiration != s.clock.Now().UnixMilli()+60_000 || got.Subject != "user_42" {
				t.Fatalf("Update expiry = %+v, %v", got, err)
			}

			v, err := c.Verify(ctx, key.Secret)
			if err != nil || v.ID != key.ID || v.LastUsedAt == nil {
				t.Fatalf("Verify = %+v, %v", v, err)
			}
			if strings.Contains(s.last().Path+s.last().RawQuery, key.Secret) {
				t.Fatal("the secret travelled in the URL")
			}

			reason := "rotated"
			got, err = c.Revoke(ctx, key.ID, &reason)
			if err != nil || !got.Revoked || *got.RevocationReason != "rotated" {
				t.Fatalf("Revoke = %+v, %v", got, err)
			}
			if _, err := c.Verify(ctx, key.Secret); !errors.Is(err, keystore.ErrRevoked) {
				t.Fatalf("Verify after revoke = %v, want ErrRevoked", err)
			}

			if err := c.Delete(ctx, key.ID); err != nil {
				t.Fatal(err)
			}
			if got := s.last(); got.Method != "DELETE" || got.Path != wantPrefix+"/"+key.ID {
				t.Fatalf("delete sent %+v", got)
			}
			if _, err := c.Get(ctx, key.ID); !errors.Is(err, keystore.ErrNotFound) {
				t.Fatalf("Get after delete = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestErrors checks how every kind of answer maps onto *APIError and the
// keystore sentinels, and so onto the CLI's exit statuses.
func TestErrors(t *testing.T) {
	sentinels := []error{keystore.ErrNotFound, keystore.ErrRevoked, keystore.ErrExpired, keystore.ErrMalformed, keystore.ErrUnavailable}
	tests := []struct {
		name     string
		call     func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error
		status   int
		code     string
		param    string
		sentinel error // the one sentinel that must match; nil for none
	}{
		{"verify garbage", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			_, err := c.Verify(ctx, "ak_garbage")
			return err
		}, 404, "api_key_invalid", "", keystore.ErrMalformed},
		{"verify deleted", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			if err := c.Delete(ctx, k.ID); err != nil {
				return err
			}
			_, err := c.Verify(ctx, k.Secret)
			return err
		}, 404, "api_key_not_found", "", keystore.ErrNotFound},
		{"verify revoked", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			if _, err := c.Revoke(ctx, k.ID, nil); err != nil {
				return err
			}
			_, err := c.Verify(ctx, k.Secret)
			return err
		}, 404, "api_key_revoked", "", keystore.ErrRevoked},
		{"verify expired", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			s.clock.Advance(time.Minute)
			_, err := c.Verify(ctx, k.Secret)
			return err
		}, 404, "api_key_expired", "", keystore.ErrExpired},
		{"get unknown", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			_, err := c.Get(ctx, "ak_"+strings.Repeat("a", 32))
			return err
		}, 404, "resource_not_found", "", keystore.ErrNotFound},
		{"revoke unknown", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			_, err := c.Revoke(ctx, "nope", nil)
			return err
		}, 404, "resource_not_found", "", keystore.ErrNotFound},
		{"create without name", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			_, err := c.Create(ctx, keystore.CreateParams{Subject: "s"})
			return err
		}, 400, "form_param_missing", "name", nil},
		{"update another subject", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			_, err := c.Update(ctx, k.ID, keystore.UpdateParams{Subject: "user_other"})
			return err
		}, 400, "form_param_invalid", "subject", nil},
		{"list limit out of range", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			_, err := c.List(ctx, keystore.ListParams{Limit: 500})
			return err
		}, 400, "form_param_invalid", "limit", nil},
		{"store down", func(ctx context.Context, c *client.Client, s *server, k *keystore.APIKey) error {
			s.mr.SetError("ERR injected")
			_, err := c.Get(ctx, k.ID)
			return err
		}, 503, "store_unavailable", "", keystore.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			c := newClient(t, s.url)
			ctx := context.Background()
			exp := int64(30)
			k, err := c.Create(ctx, keystore.CreateParams{Name: "n", Subject: "user_42", SecondsUntilExpiration: &exp})
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(ctx, c, s, k)
			var apiErr *client.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *APIError", err, err)
			}
			if apiErr.Status != tc.status || apiErr.Code != tc.code || apiErr.Param != tc.param ||
				apiErr.TraceID == "" || apiErr.Message == "" || apiErr.LongMessage == "" {
				t.Fatalf("got %+v; want status %d code %s param %q", apiErr, tc.status, tc.code, tc.param)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == tc.sentinel) {
					t.Errorf("errors.Is(%v, %v) = %v", err, s, errors.Is(err, s))
				}
			}
			if tc.status == 503 && apiErr.RetryAfter != time.Second {
				t.Errorf("RetryAfter %v, want 1s", apiErr.RetryAfter)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.code) || strings.Contains(msg, k.Secret) || strings.Contains(msg, adminToken) {
				t.Errorf("Error() = %q", msg)
			}
		})
	}
}

func TestWrongAdminToken(t *testing.T) {
	s := newServer(t)
	c, err := client.New(s.url, "not-the-token")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(context.Background(), keystore.ListParams{})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 401 || apiErr.Code != "authentication_invalid" {
		t.Fatalf("List with a wrong token = %v", err)
	}
	if errors.Is(err, keystore.ErrUnavailable) || errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("a 401 must be a refusal, not %v", err)
	}
}

// TestUnreachable checks that the failures that leave the answer unknown
// all match keystore.ErrUnavailable: no server, a proxy's error page, a
// 200 that is not the API's JSON.
func TestUnreachable(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	badGateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "<html>502 Bad Gateway</html>")
	}))
	defer badGateway.Close()
	notAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<html>a web page</html>")
	}))
	defer notAPI.Close()

	tests := []struct {
		name   string
		url    string
		isAPI  bool // an *APIError is expected
		status int
	}{
		{"connection refused", closed.URL, false, 0},
		{"proxy error page", badGateway.URL, true, 502},
		{"not the API", notAPI.URL, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.url)
			_, err := c.Verify(context.Background(), "ak_whatever")
			if !errors.Is(err, keystore.ErrUnavailable) {
				t.Fatalf("err = %v, want one matching ErrUnavailable", err)
			}
			var apiErr *client.APIError
			if errors.As(err, &apiErr) != tc.isAPI || tc.isAPI && (apiErr.Status != tc.status || apiErr.Code != "") {
				t.Fatalf("err = %#v", err)
			}
			for _, s := range []error{keystore.ErrNotFound, keystore.ErrRevoked, keystore.ErrMalformed} {
				if errors.Is(err, s) {
					t.Fatalf("err %v matches %v", err, s)
				}
			}
			if strings.Contains(err.Error(), adminToken) || strings.Contains(err.Error(), "ak_whatever") {
				t.Fatalf("the error carries a secret: %v", err)
			}
		})
	}
	t.Run("canceled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := newClient(t, notAPI.URL).Get(ctx, "ak_x")
		if !errors.Is(err, context.Canceled) || !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestNew(t *testing.T) {
	tests := []struct {
		url, token string
		ok         bool
	}{
		{"http://127.0.0.1:8080", "t", true},
		{"https://keys.example.com/v1/", "t", true},
		{"127.0.0.1:8080", "t", false},
		{"ftp://host", "t", false},
		{"http://", "t", false},
		{"http://host", "", false},
		{"http://host/%zz", "t", false},
	}
	for _, tc := range tests {
		c, err := client.New(tc.url, tc.token)
		if (err == nil) != tc.ok || (c != nil) != tc.ok {
			t.Errorf("New(%q, %q) = %v, %v", tc.url, tc.token, c, err)
		}
	}
	c, _ := client.New("http://host", "t")
	if _, err := c.Get(context.Background(), ""); err == nil || errors.Is(err, keystore.ErrUnavailable) {
		t.Errorf("Get with an empty ID = %v", err)
	}
}

// TestOnRedisServer runs the client against the API on a real redis-server.
func TestOnRedisServer(t *testing.T) {
	s := newServerOn(t, nil, redistest.Server(t))
	c := newClient(t, s.url)
	ctx := context.Background()
	k, err := c.Create(ctx, keystore.CreateParams{Name: "n", Subject: "org_1", Scopes: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Verify(ctx, k.Secret); err != nil || v.Subject != "org_1" {
		t.Fatalf("Verify = %+v, %v", v, err)
	}
	if l, err := c.GetAll(ctx, keystore.GetAllParams{Subject: "org_1"}); err != nil || l.TotalCount != 1 {
		t.Fatalf("GetAll = %+v, %v", l, err)
	}
	if err := c.Delete(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(ctx, k.Secret); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("Verify after delete = %v", err)
	}
}

// TestKeyLifecycleCalls drives roll, disable, enable, rename, allowed CIDRs, bulk
// revoke and import through the real admin API.
func TestKeyLifecycleCalls(t *testing.T) {
	s := newServer(t)
	c, err := client.New(s.url, adminToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old, err := c.Create(ctx, keystore.CreateParams{Name: "ci", Subject: "org_1", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.Roll(ctx, old.ID, time.Hour)
	if err != nil || k.Secret == "" || k.RolledFrom == nil || *k.RolledFrom != old.ID {
		t.Fatalf("Roll = %+v, %v", k, err)
	}
	if got := s.last(); got.Path != "/v1/api_keys/"+old.ID+"/roll" || got.Body != `{"expires_in_seconds":3600}` {
		t.Errorf("Roll sent %s %s", got.Path, got.Body)
	}
	for _, secret := range []string{old.Secret, k.Secret} {
		if _, err := c.Verify(ctx, secret); err != nil {
			t.Errorf("during the grace: %v", err)
		}
	}
	if _, err := c.Disable(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(ctx, k.Secret); !errors.Is(err, keystore.ErrDisabled) {
		t.Errorf("Verify of a disabled key = %v, want ErrDisabled", err)
	}
	if got, err := c.Enable(ctx, k.ID); err != nil || !got.Enabled {
		t.Fatalf("Enable = %+v, %v", got, err)
	}
	renamed := "ci 2"
	got, err := c.Update(ctx, k.ID, keystore.UpdateParams{Name: &renamed, AllowedCIDRs: &[]string{"192.0.2.0/24"}})
	if err != nil || got.Name != renamed || len(got.AllowedCIDRs) != 1 {
		t.Fatalf("Update = %+v, %v", got, err)
	}
	// The verify call comes from 127.0.0.1, outside the key's CIDRs.
	if _, err := c.Verify(ctx, k.Secret); !errors.Is(err, keystore.ErrIPNotAllowed) {
		t.Errorf("Verify from outside the CIDRs = %v, want ErrIPNotAllowed", err)
	}
	n, err := c.RevokeAll(ctx, "org_1", nil)
	if err != nil || n != 2 {
		t.Fatalf("RevokeAll = %d, %v; want 2", n, err)
	}
	if _, err := c.Verify(ctx, old.Secret); !errors.Is(err, keystore.ErrRevoked) {
		t.Errorf("after RevokeAll = %v, want ErrRevoked", err)
	}
	const foreign = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
	sum := sha256.Sum256([]byte(foreign))
	imp, err := c.Import(ctx, keystore.ImportParams{CreateParams: keystore.CreateParams{Name: "moved", Subject: "org_2"},
		Hash: keystore.ImportHash{Algorithm: "sha256", Value: hex.EncodeToString(sum[:])}})
	if err != nil || imp.Secret != "" {
		t.Fatalf("Import = %+v, %v", imp, err)
	}
	if got, err := c.Verify(ctx, foreign); err != nil || got.ID != imp.ID {
		t.Errorf("Verify of the imported secret = %v, %v", got, err)
	}
}
