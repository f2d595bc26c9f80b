package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/keygate/keygate/internal/apierror"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/middleware"
)

// POST /api_keys: the new key, with its secret this once.
func (h *handler) create(c *call) (any, error) {
	var p keystore.CreateParams
	if err := decodeBody(c.r, &p); err != nil {
		return nil, err
	}
	key, err := h.store.Create(c.r.Context(), p)
	if err != nil {
		return nil, err
	}
	c.keyID = key.ID
	if err := h.record(c, audit.Created, nil, key); err != nil {
		h.discard(c, key.ID)
		return nil, err
	}
	return key, nil
}

// GET /api_keys: one page and the count of every match.
func (h *handler) list(c *call) (any, error) {
	p, err := listParams(c.r.URL.Query())
	if err != nil {
		return nil, err
	}
	list, err := h.store.List(c.r.Context(), p)
	if err != nil {
		return nil, err
	}
	if list.Data == nil {
		list.Data = []*keystore.APIKey{}
	}
	return list, nil
}

// GET /api_keys/{id}
func (h *handler) get(c *call) (any, error) {
	c.keyID = loggableID(c.id)
	return h.store.Get(c.r.Context(), c.id)
}

// updateBody keeps each field raw, so that an absent field (nil) is told
// apart from a null one ("null"), which clears it.
type updateBody struct {
	Name                   json.RawMessage `json:"name"`
	Enabled                json.RawMessage `json:"enabled"`
	AllowedCIDRs           json.RawMessage `json:"allowed_cidrs"`
	Subject                json.RawMessage `json:"subject"`
	Description            json.RawMessage `json:"description"`
	Claims                 json.RawMessage `json:"claims"`
	Scopes                 json.RawMessage `json:"scopes"`
	SecondsUntilExpiration json.RawMessage `json:"seconds_until_expiration"`
	RateLimits             json.RawMessage `json:"rate_limits"`
	Credits                json.RawMessage `json:"credits"`
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// params turns the body into the store's parameters: null clears the
// description, the claims, the scopes and the allowed CIDRs, and a null
// seconds_until_expiration makes the key never expire. A null name or
// enabled changes nothing.
func (b *updateBody) params() (keystore.UpdateParams, error) {
	var p keystore.UpdateParams
	if b.Name != nil && !isNull(b.Name) {
		p.Name = new(string)
		if err := decodeField("name", b.Name, p.Name); err != nil {
			return p, err
		}
	}
	if b.Enabled != nil && !isNull(b.Enabled) {
		p.Enabled = new(bool)
		if err := decodeField("enabled", b.Enabled, p.Enabled); err != nil {
			return p, err
		}
	}
	if b.AllowedCIDRs != nil {
		p.AllowedCIDRs = &[]string{}
		if !isNull(b.AllowedCIDRs) {
			if err := decodeField("allowed_cidrs", b.AllowedCIDRs, p.AllowedCIDRs); err != nil {
				return p, err
			}
		}
	}
	if b.Subject != nil && !isNull(b.Subject) {
		if err := decodeField("subject", b.Subject, &p.Subject); err != nil {
			return p, err
		}
	}
	if b.Description != nil {
		p.Description = new(string)
		if !isNull(b.Description) {
			if err := decodeField("description", b.Description, p.Description); err != nil {
				return p, err
			}
		}
	}
	if b.Claims != nil {
		p.Claims = b.Claims // the store checks it is an object or null
	}
	if b.Scopes != nil {
		p.Scopes = &[]string{}
		if !isNull(b.Scopes) {
			if err := decodeField("scopes", b.Scopes, p.Scopes); err != nil {
				return p, err
			}
		}
	}
	if b.RateLimits != nil {
		p.RateLimits = &[]keystore.RateLimit{}
		if !isNull(b.RateLimits) {
			if err := decodeField("rate_limits", b.RateLimits, p.RateLimits); err != nil {
				return p, err
			}
		}
	}
	if b.Credits != nil {
		if isNull(b.Credits) {
			p.NoCredits = true
		} else {
			p.Credits = &keystore.Credits{}
			if err := decodeField("credits", b.Credits, p.Credits); err != nil {
				return p, err
			}
		}
	}
	if b.SecondsUntilExpiration != nil {
		if isNull(b.SecondsUntilExpiration) {
			p.NeverExpires = true
		} else {
			p.SecondsUntilExpiration = new(int64)
			if err := decodeField("seconds_until_expiration", b.SecondsUntilExpiration, p.SecondsUntilExpiration); err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// PATCH /api_keys/{id}
func (h *handler) update(c *call) (any, error) {
	c.keyID = loggableID(c.id)
	var b updateBody
	if err := decodeBody(c.r, &b); err != nil {
		return nil, err
	}
	p, err := b.params()
	if err != nil {
		return nil, err
	}
	before, err := h.before(c)
	if err != nil {
		return nil, err
	}
	key, err := h.store.Update(c.r.Context(), c.id, p)
	action := audit.Updated
	if before != nil && key != nil && before.Enabled != key.Enabled {
		// Enabling or disabling is the change that matters; the event's
		// changes list every field all the same.
		action = map[bool]audit.Action{true: audit.Enabled, false: audit.Disabled}[key.Enabled]
	}
	return h.recorded(c, action, before, key, err)
}

// POST /api_keys/{id}/revoke. The body may be empty; an empty reason is
// no reason. Revoking twice keeps the first reason.
func (h *handler) revoke(c *call) (any, error) {
	c.keyID = loggableID(c.id)
	var b struct {
		RevocationReason *string `json:"revocation_reason"`
	}
	if err := decodeBody(c.r, &b); err != nil {
		return nil, err
	}
	if b.RevocationReason != nil && *b.RevocationReason == "" {
		b.RevocationReason = nil
	}
	before, err := h.before(c)
	if err != nil {
		return nil, err
	}
	key, err := h.store.Revoke(c.r.Context(), c.id, b.RevocationReason)
	return h.recorded(c, audit.Revoked, before, key, err)
}

// deleted is the answer to DELETE, Clerk's DeletedObject.
type deleted struct {
	Object  string `json:"object"`
	ID      string `json:"id"`
	Deleted bool   `json:"deleted"`
}

// DELETE /api_keys/{id}
func (h *handler) delete(c *call) (any, error) {
	c.keyID = loggableID(c.id)
	// A deleted key reads as not found, and deleting it again succeeds (and
	// is recorded again, so that a repeat after a 503 leaves an event).
	before, err := h.before(c)
	if err != nil {
		return nil, err
	}
	err = h.store.Delete(c.r.Context(), c.id)
	if _, err := h.recorded(c, audit.Deleted, before, nil, err); err != nil {
		return nil, err
	}
	return &deleted{Object: keystore.KeyType, ID: c.id, Deleted: true}, nil
}

// GET /api_keys/{id}/secret: keygate stores no secret, only its digest.
func (h *handler) secret(c *call) (any, error) {
	c.keyID = loggableID(c.id)
	return nil, &apierror.Error{Status: http.StatusNotFound, Code: "api_key_secret_unavailable",
		Message:     "secret unavailable",
		LongMessage: "an API key's secret is shown once, in the response to create; keygate keeps only its digest"}
}

// POST /api_keys/verify: the key, through the one verifier, so that the
// verification counts as a use, and spends cost (default 1) of a metered
// key's limits and credits. A key with allowed CIDRs is checked against
// client_ip when the body gives one, else against the caller's address.
func (h *handler) verify(c *call) (any, error) {
	var b struct {
		Secret   string  `json:"secret"`
		Cost     *int64  `json:"cost"`
		ClientIP *string `json:"client_ip"`
	}
	if err := decodeBody(c.r, &b); err != nil {
		return nil, err
	}
	req := keystore.Request{Secret: b.Secret, Source: keystore.SourceAPI, ClientIP: h.proxies.ClientIP(c.r)}
	if b.ClientIP != nil {
		a, err := netip.ParseAddr(*b.ClientIP)
		if err != nil {
			return nil, &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_invalid", Message: "is invalid",
				LongMessage: "client_ip must be an IPv4 or IPv6 address", Param: "client_ip"}
		}
		req.ClientIP = a
	}
	if b.Cost != nil {
		if *b.Cost < 1 || *b.Cost > keystore.MaxCost {
			return nil, &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_invalid", Message: "is invalid",
				LongMessage: "cost must be 1 to 1000000", Param: "cost"}
		}
		req.Cost = *b.Cost
	}
	res, err := h.verifier.Check(c.r.Context(), req)
	if res.Key != nil {
		c.keyID = res.Key.ID
	}
	middleware.SetLimitHeaders(c.header, res.Limits)
	if err != nil {
		return nil, verifyError(err)
	}
	out := *res.Key
	out.Secret = ""
	if res.Limits != nil && res.Limits.Credits != nil && out.Credits != nil {
		c := *out.Credits // the cached record's balance is from before this request
		c.Remaining = *res.Limits.Credits
		out.Credits = &c
	}
	return &out, nil
}

// POST /api_keys/{id}/roll: a new key, with its secret, that replaces the
// key; the old one verifies for expires_in_seconds more (default a day; 0
// revokes it now).
func (h *handler) roll(c *call) (any, error) {
	c.keyID = loggableID(c.id)
	var b struct {
		ExpiresInSeconds *int64 `json:"expires_in_seconds"`
	}
	if err := decodeBody(c.r, &b); err != nil {
		return nil, err
	}
	grace := keystore.DefaultRollGrace
	if s := b.ExpiresInSeconds; s != nil {
		if *s < 0 || *s > keystore.MaxSecondsUntilExpiration {
			return nil, &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_invalid", Message: "is invalid",
				LongMessage: fmt.Sprintf("expires_in_seconds must be between 0 (revoke the old key now) and %d", keystore.MaxSecondsUntilExpiration),
				Param:       "expires_in_seconds"}
		}
		grace = time.Duration(*s) * time.Second
	}
	before, err := h.before(c)
	if err != nil {
		return nil, err
	}
	key, err := h.store.Roll(c.r.Context(), c.id, grace)
	if err == nil && h.audit != nil {
		// One event for the old key (its expiration and rolled_to), one
		// for the new (created), before the answer.
		old, gerr := h.store.Get(c.r.Context(), c.id)
		if gerr != nil {
			old = before
		}
		if aerr := h.record(c, audit.Rolled, before, old); aerr != nil {
			return nil, aerr
		}
		created := *key
		created.Secret = ""
		if aerr := h.record(&call{r: c.r, header: c.header, id: key.ID, token: c.token}, audit.Created, nil, &created); aerr != nil {
			return nil, aerr
		}
	}
	return key, err
}

// bulkRevoke is the answer to POST /api_keys/revoke_all.
type bulkRevoke struct {
	Object  string `json:"object"` // "bulk_revoke"
	Subject string `json:"subject"`
	Revoked int    `json:"revoked"` // keys this call revoked
}

// POST /api_keys/revoke_all: revokes every key of a subject.
func (h *handler) revokeAll(c *call) (any, error) {
	var b struct {
		Subject          *string `json:"subject"`
		RevocationReason *string `json:"revocation_reason"`
	}
	if err := decodeBody(c.r, &b); err != nil {
		return nil, err
	}
	if b.Subject == nil {
		return nil, &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_missing", Message: "is missing",
			LongMessage: "subject is missing", Param: "subject"}
	}
	n, err := h.store.RevokeAll(c.r.Context(), *b.Subject, b.RevocationReason)
	if err != nil && !errors.Is(err, keystore.ErrInvalidationUnconfirmed) {
		return nil, err
	}
	changes := map[string]audit.Change{"revoked_keys": {From: json.RawMessage("null"), To: json.RawMessage(strconv.Itoa(n))}}
	if b.RevocationReason != nil {
		reason, _ := json.Marshal(*b.RevocationReason)
		changes["revocation_reason"] = audit.Change{From: json.RawMessage("null"), To: reason}
	}
	if aerr := h.recordEvent(c, &audit.Event{Action: audit.BulkRevoked, Subject: *b.Subject, Changes: changes}); aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return nil, err
	}
	return &bulkRevoke{Object: "bulk_revoke", Subject: *b.Subject, Revoked: n}, nil
}

// POST /api_keys/import: a key whose secret another system issued, from
// a create body and the SHA-256 of the secret; answered without a secret.
func (h *handler) importKey(c *call) (any, error) {
	var p keystore.ImportParams
	if err := decodeBody(c.r, &p); err != nil {
		return nil, err
	}
	key, err := h.store.Import(c.r.Context(), p)
	if err != nil {
		return nil, err
	}
	c.keyID, c.id = key.ID, key.ID
	if aerr := h.record(c, audit.Imported, nil, key); aerr != nil {
		h.discard(c, key.ID)
		return nil, aerr
	}
	return key, nil
}

// GET /api_keys/{id}/usage?granularity=minute|hour|day&start=ms&end=ms:
// the key's verifications by outcome. Defaults: hour, the last 24 hours.
func (h *handler) usage(c *call) (any, error) {
	c.keyID = loggableID(c.id)
	q := c.r.URL.Query()
	g := q.Get("granularity")
	if g == "" {
		g = "hour"
	}
	end := time.Now()
	start := end.Add(-24 * time.Hour)
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"start", &start}, {"end", &end}} {
		if v := q.Get(p.name); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ms < 0 {
				return nil, &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_invalid", Message: "is invalid",
					LongMessage: p.name + " must be a Unix time in milliseconds", Param: p.name}
			}
			*p.t = time.UnixMilli(ms)
		}
	}
	u, err := h.store.Usage(c.r.Context(), c.id, g, start, end)
	if errors.Is(err, keystore.ErrBadRange) {
		return nil, &apierror.Error{Status: http.StatusBadRequest, Code: "form_param_invalid", Message: "is invalid",
			LongMessage: "granularity must be minute, hour or day, and start before end, at most 3,000 buckets apart", Param: "granularity", Err: err}
	}
	return u, err
}

// loggableID returns id when it has the form of a key ID, and "" otherwise,
// so that a secret pasted where an ID belongs never reaches the log.
func loggableID(id string) string {
	if keystore.ValidID(id) {
		return id
	}
	return ""
}

// writeJSON writes body, already encoded, as a 200 response.
func writeJSON(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", apierror.ContentType)
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
