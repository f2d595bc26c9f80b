// Package client calls keygate's admin API (docs/api.md) from Go. Its surface mirrors
// the APIKeys object of Clerk's SDKs (Create, GetAll, List, Get, Update,
// Revoke, Delete and Verify) and adds keygate's own calls: Roll, Disable,
// Enable, RevokeAll, Import and Usage.
//
//	c, err := client.New("http://127.0.0.1:8080", os.Getenv("KEYGATE_ADMIN_TOKEN"))
//	if err != nil { … }
//	key, err := c.Create(ctx, apikey.CreateParams{Name: "CI", Subject: "user_42"})
//	fmt.Println(key.Secret) // shown this once
//
//	got, err := c.Verify(ctx, secret)
//	switch {
//	case errors.Is(err, apikey.ErrUnavailable): // unreachable, or a 5xx: the answer is unknown
//	case errors.Is(err, apikey.ErrRevoked): // …and the other refusals
//	case err != nil:
//	default: // got.Subject, got.Scopes …
//	}
//
// The types and sentinel errors are package apikey's, which keystore
// re-exports under the same names (keystore.APIKey is apikey.APIKey):
// importing apikey rather than keystore keeps Redis and Prometheus out of
// a client's build (docs/packages.md).
//
// Every error the server answers is an [*APIError]. Those that map cleanly
// onto an outcome of a verification match its sentinel with [errors.Is]:
// 404 api_key_revoked is [apikey.ErrRevoked], api_key_disabled
// [apikey.ErrDisabled], api_key_expired [apikey.ErrExpired],
// api_key_not_found and resource_not_found [apikey.ErrNotFound],
// api_key_invalid [apikey.ErrMalformed], 403 api_key_ip_not_allowed
// [apikey.ErrIPNotAllowed], and any 5xx [apikey.ErrUnavailable]. A server
// that cannot be reached, or that answers something other than the API's
// JSON, is an error wrapping [apikey.ErrUnavailable] too. So a command line tool decides its exit
// status in two checks:
//
//	var apiErr *client.APIError
//	switch {
//	case err == nil: // 0
//	case errors.Is(err, apikey.ErrUnavailable): // 3: unreachable or 5xx
//	case errors.As(err, &apiErr): // 1: the server refused
//	}
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/keystore/apikey"
)

// maxResponseBytes bounds what the client reads of a response: a page of
// 100 keys with the largest claims is under 1 MiB.
const maxResponseBytes = 16 << 20

// Client calls one keygate admin API. It is safe for concurrent use.
type Client struct {
	base      *url.URL // with no trailing slash in its path
	token     string
	http      *http.Client
	userAgent string
}

// Option configures a [Client].
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc. Default: an
// [http.Client] with a 30 s timeout.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithUserAgent sets the User-Agent of every request. Default
// "keygate-client".
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client for the admin API at baseURL (for example
// "http://127.0.0.1:8080", or "https://keys.example.com/v1"), authenticated
// with adminToken.
func New(baseURL, adminToken string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: parsing base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must be http:// or https:// with a host", baseURL)
	}
	if adminToken == "" {
		return nil, errors.New("client: the admin token is empty")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	c := &Client{base: u, token: adminToken, userAgent: "keygate-client"}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second}
	}
	return c, nil
}

// Create creates a key and returns it with its secret, which the server
// shows this once.
func (c *Client) Create(ctx context.Context, p apikey.CreateParams) (*apikey.APIKey, error) {
	return c.key(ctx, http.MethodPost, "/api_keys", p)
}

// List returns one page of keys, newest first, and the number of every
// match. A zero Limit is the server's default, 10.
func (c *Client) List(ctx context.Context, p apikey.ListParams) (*apikey.KeyList, error) {
	q := url.Values{}
	if p.Subject != "" {
		q.Set("subject", p.Subject)
	}
	if p.Query != "" {
		q.Set("query", p.Query)
	}
	if p.IncludeInvalid {
		q.Set("include_invalid", "true")
	}
	if p.Type != "" {
		q.Set("type", p.Type)
	}
	if p.Limit != 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Offset != 0 {
		q.Set("offset", strconv.Itoa(p.Offset))
	}
	var l apikey.KeyList
	if err := c.do(ctx, http.MethodGet, "/api_keys", q, nil, &l); err != nil {
		return nil, err
	}
	for _, k := range l.Data {
		normalize(k)
	}
	return &l, nil
}

// GetAll is [Client.List] with page numbers, as Clerk's SDKs page: page
// InitialPage (from 1; 0 means 1) of PageSize keys (0 means 10).
func (c *Client) GetAll(ctx context.Context, p apikey.GetAllParams) (*apikey.KeyList, error) {
	size := p.PageSize
	if size == 0 {
		size = apikey.DefaultLimit
	}
	page := p.InitialPage
	if page == 0 {
		page = 1
	}
	if page < 1 {
		return nil, fmt.Errorf("client: InitialPage %d must be 1 or more", p.InitialPage)
	}
	return c.List(ctx, apikey.ListParams{
		Subject:        p.Subject,
		Query:          p.Query,
		IncludeInvalid: p.IncludeInvalid,
		Limit:          size,
		Offset:         (page - 1) * size,
	})
}

// Get returns the key with the given ID; [apikey.ErrNotFound] when
// there is none.
func (c *Client) Get(ctx context.Context, id string) (*apikey.APIKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	return c.key(ctx, http.MethodGet, "/api_keys/"+url.PathEscape(id), nil)
}

// Update changes the given fields of a key. As in [apikey.UpdateParams],
// a nil field is left as it is; a pointer to "" clears the description, the
// JSON literal null clears the claims, a pointer to an empty slice clears
// the scopes, and NeverExpires removes the expiration.
func (c *Client) Update(ctx context.Context, id string, p apikey.UpdateParams) (*apikey.APIKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	body := map[string]any{}
	if p.Subject != "" {
		body["subject"] = p.Subject
	}
	if p.Name != nil {
		body["name"] = *p.Name
	}
	if p.Enabled != nil {
		body["enabled"] = *p.Enabled
	}
	if p.AllowedCIDRs != nil {
		cidrs := *p.AllowedCIDRs
		if cidrs == nil {
			cidrs = []string{}
		}
		body["allowed_cidrs"] = cidrs
	}
	if p.Description != nil {
		body["description"] = *p.Description
	}
	if p.Claims != nil {
		body["claims"] = p.Claims
	}
	if p.Scopes != nil {
		scopes := *p.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		body["scopes"] = scopes
	}
	switch {
	case p.NeverExpires:
		body["seconds_until_expiration"] = nil
	case p.SecondsUntilExpiration != nil:
		body["seconds_until_expiration"] = *p.SecondsUntilExpiration
	}
	if p.RateLimits != nil {
		limits := *p.RateLimits
		if limits == nil {
			limits = []apikey.RateLimit{}
		}
		body["rate_limits"] = limits
	}
	switch {
	case p.NoCredits:
		body["credits"] = nil
	case p.Credits != nil:
		body["credits"] = p.Credits
	}
	return c.key(ctx, http.MethodPatch, "/api_keys/"+url.PathEscape(id), body)
}

// Roll replaces a key with a new one, which it returns with its secret
// (shown this once): the old key keeps verifying for grace (0 revokes it
// now; the API's default is a day), and its credits move to the new one.
func (c *Client) Roll(ctx context.Context, id string, grace time.Duration) (*apikey.APIKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	if grace < 0 {
		return nil, fmt.Errorf("client: the grace %v is negative", grace)
	}
	body := struct {
		ExpiresInSeconds int64 `json:"expires_in_seconds"`
	}{int64((grace + time.Second - 1) / time.Second)}
	return c.key(ctx, http.MethodPost, "/v1/api_keys/"+url.PathEscape(id)+"/roll", body)
}

// Disable disables a key: it is refused as a revoked key is until
// [Client.Enable].
func (c *Client) Disable(ctx context.Context, id string) (*apikey.APIKey, error) {
	return c.Update(ctx, id, apikey.UpdateParams{Enabled: new(false)})
}

// Enable enables a disabled key.
func (c *Client) Enable(ctx context.Context, id string) (*apikey.APIKey, error) {
	return c.Update(ctx, id, apikey.UpdateParams{Enabled: new(true)})
}

// RevokeAll revokes every key of subject, with an optional reason, and
// returns how many keys it revoked (those revoked already not counted).
func (c *Client) RevokeAll(ctx context.Context, subject string, reason *string) (int, error) {
	if subject == "" {
		return 0, errors.New("client: the subject is empty")
	}
	in := struct {
		Subject          string  `json:"subject"`
		RevocationReason *string `json:"revocation_reason"`
	}{subject, reason}
	var out struct {
		Revoked int `json:"revoked"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/api_keys/revoke_all", nil, in, &out); err != nil {
		return 0, err
	}
	return out.Revoked, nil
}

// Import stores a key whose secret another system issued, from the SHA-256
// of that secret, and returns it (without a secret: its holder keeps the
// one they have).
func (c *Client) Import(ctx context.Context, p apikey.ImportParams) (*apikey.APIKey, error) {
	return c.key(ctx, http.MethodPost, "/v1/api_keys/import", p)
}

// Usage returns a key's verifications by outcome at granularity ("minute",
// "hour" or "day") for the buckets in [start, end).
func (c *Client) Usage(ctx context.Context, id, granularity string, start, end time.Time) (*apikey.UsageHistory, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	q := url.Values{"granularity": {granularity},
		"start": {strconv.FormatInt(start.UnixMilli(), 10)}, "end": {strconv.FormatInt(end.UnixMilli(), 10)}}
	var u apikey.UsageHistory
	if err := c.do(ctx, http.MethodGet, "/v1/api_keys/"+url.PathEscape(id)+"/usage", q, nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Revoke revokes a key, with an optional reason, and returns it. Revoking
// a revoked key changes nothing and keeps the first reason.
func (c *Client) Revoke(ctx context.Context, id string, reason *string) (*apikey.APIKey, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	body := struct {
		RevocationReason *string `json:"revocation_reason"`
	}{reason}
	return c.key(ctx, http.MethodPost, "/api_keys/"+url.PathEscape(id)+"/revoke", body)
}

// Delete removes a key for good.
func (c *Client) Delete(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	var d struct {
		Deleted bool `json:"deleted"`
	}
	if err := c.do(ctx, http.MethodDelete, "/api_keys/"+url.PathEscape(id), nil, nil, &d); err != nil {
		return err
	}
	if !d.Deleted {
		return fmt.Errorf("deleting key %s: %w: the answer does not say deleted", id, apikey.ErrUnavailable)
	}
	return nil
}

// Verify checks a secret and returns its key, counting the use. A refused
// secret is an [*APIError] matching [apikey.ErrMalformed],
// [apikey.ErrNotFound], [apikey.ErrRevoked] or [apikey.ErrExpired].
func (c *Client) Verify(ctx context.Context, secret string) (*apikey.APIKey, error) {
	body := struct {
		Secret string `json:"secret"`
	}{secret}
	return c.key(ctx, http.MethodPost, "/api_keys/verify", body)
}

// key sends a request whose answer is a key.
func (c *Client) key(ctx context.Context, method, path string, in any) (*apikey.APIKey, error) {
	var k apikey.APIKey
	if err := c.do(ctx, method, path, nil, in, &k); err != nil {
		return nil, err
	}
	normalize(&k)
	return &k, nil
}

// normalize makes a decoded key read as the store returns it: null claims
// are nil, no scopes an empty slice.
func normalize(k *apikey.APIKey) {
	if string(k.Claims) == "null" {
		k.Claims = nil
	}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
}

func checkID(id string) error {
	if id == "" {
		return errors.New("client: the key ID is empty")
	}
	return nil
}

// do sends one request and decodes a 200 answer into out. The path and the
// error messages never carry a secret: secrets travel only in bodies.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding the request of %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("building %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s %s: %w: %w", method, path, apikey.ErrUnavailable, stripURL(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("reading the answer to %s %s: %w: %w", method, path, apikey.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return newAPIError(resp, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding the answer to %s %s: %w: not the admin API's JSON (%v)", method, path, apikey.ErrUnavailable, err)
	}
	return nil
}

// stripURL keeps a transport error's cause but not its URL, which the
// caller's message already names by method and path.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
