package console

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// onceTTL is how long a new key's secret waits for the page that shows it:
// the redirect after the create is followed at once.
const onceTTL = 2 * time.Minute

// revealed is what the page that shows a secret once needs.
type revealed struct {
	KeyID   string `json:"key_id"`
	Name    string `json:"name"`
	Secret  string `json:"secret"`
	Rolled  string `json:"rolled"`  // the key it replaces, after a roll
	Session string `json:"session"` // the session that made it: no other may see it
}

// onces holds a new key's secret between the POST that made the key and
// the GET that shows it (so that reloading the page neither repeats the
// change nor shows the secret again). Redis holds it sealed with AES-GCM
// under a random key that only the browser's cookie holds, for at most
// onceTTL, and gives it up once: what Redis keeps is useless without the
// cookie, and the cookie is useless once the page has been shown.
type onces struct {
	rdb redis.UniversalClient
	ns  string
}

func (o *onces) key(id string) string {
	d := sha256.Sum256([]byte(id))
	return o.ns + ":console:once:" + hex.EncodeToString(d[:])
}

// put seals v and returns the cookie value that opens it.
func (o *onces) put(ctx context.Context, v revealed) (string, error) {
	var id, k [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	if _, err := rand.Read(k[:]); err != nil {
		return "", err
	}
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	aead, err := newAEAD(k[:])
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	sealed := aead.Seal(nonce, nonce, plain, id[:])
	idS := base64.RawURLEncoding.EncodeToString(id[:])
	if err := o.rdb.Set(ctx, o.key(idS), sealed, onceTTL).Err(); err != nil {
		return "", fmt.Errorf("storing the new secret for its page: %w", err)
	}
	return idS + "." + base64.RawURLEncoding.EncodeToString(k[:]), nil
}

// errGone reports a secret shown already, expired, or never made.
var errGone = errors.New("the secret was shown once and is gone")

// take opens and removes what cookie points at.
func (o *onces) take(ctx context.Context, cookie string) (*revealed, error) {
	idS, kS, ok := strings.Cut(cookie, ".")
	id, err1 := base64.RawURLEncoding.DecodeString(idS)
	k, err2 := base64.RawURLEncoding.DecodeString(kS)
	if !ok || err1 != nil || err2 != nil || len(id) != 16 || len(k) != 16 {
		return nil, errGone
	}
	sealed, err := o.rdb.GetDel(ctx, o.key(idS)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, errGone
	}
	if err != nil {
		return nil, fmt.Errorf("reading the new secret: %w", err)
	}
	aead, err := newAEAD(k)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errGone
	}
	plain, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], id)
	if err != nil {
		return nil, errGone
	}
	var v revealed
	if err := json.Unmarshal(plain, &v); err != nil {
		return nil, errGone
	}
	return &v, nil
}

func newAEAD(k []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
