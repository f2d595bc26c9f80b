package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts a secret in the Standard Webhooks convention: the
// rest is the base64 of the HMAC key.
const SecretPrefix = "whsec_"

// minKeyBytes is the shortest HMAC key accepted: the Standard Webhooks
// specification asks for 24 to 64 random bytes.
const minKeyBytes = 24

// Signer signs messages as Standard Webhooks does: webhook-id,
// webhook-timestamp and webhook-signature "v1,<base64 of HMAC-SHA256 of
// id.timestamp.body>".
type Signer struct{ key []byte }

// NewSigner reads a secret "whsec_<base64>" (the prefix may be left out)
// of at least 24 bytes. Errors never repeat the secret.
func NewSigner(secret string) (*Signer, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil {
		return nil, errors.New("the webhook secret must be whsec_ followed by base64 (openssl rand -base64 32 makes the rest)")
	}
	if len(key) < minKeyBytes {
		return nil, errors.New("the webhook secret must hold at least 24 bytes once base64-decoded")
	}
	return &Signer{key: key}, nil
}

// Signature is the webhook-signature of body sent as message id at ts.
func (s *Signer) Signature(id string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Sign sets the three Standard Webhooks headers of a request carrying body.
func (s *Signer) Sign(h http.Header, id string, ts time.Time, body []byte) {
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", s.Signature(id, ts, body))
}
