package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/redis/go-redis/v9"
)

// The cookies the console sets, both HttpOnly, SameSite=Strict and scoped
// to /console.
const (
	sessionCookie = "keygate_console"        // the session's ID
	signInCookie  = "keygate_console_signin" // the sign-in form's CSRF token, before there is a session
	onceCookie    = "keygate_console_once"   // the key that opens a new secret, for one look
)

// session is what Redis holds of a signed-in browser. It never holds the
// admin token: Name finds the token among the configured ones on every
// request, and MAC, an HMAC of the session ID keyed with that token,
// proves it is still the token that signed in. Without the cookie's
// session ID, which Redis does not hold, the MAC reveals nothing of the
// token.
type session struct {
	Name string `json:"name"` // the admin token's name
	MAC  string `json:"mac"`  // hex HMAC-SHA256(token, session ID)
	CSRF string `json:"csrf"` // the token every state-changing form carries
}

// signedIn is a request's resolved session: the session and the admin
// token it stands for, as configured now.
type signedIn struct {
	id      string // the session ID, from the cookie
	session session
	token   adminapi.Token
}

// sessions keeps sessions in Redis under "<namespace>:console:session:"
// and the SHA-256 of their ID, so that reading Redis gives no usable
// cookie.
type sessions struct {
	rdb redis.UniversalClient
	ns  string
	ttl time.Duration
}

func (s *sessions) key(id string) string {
	d := sha256.Sum256([]byte(id))
	return s.ns + ":console:session:" + hex.EncodeToString(d[:])
}

// create stores a new session for tok and returns its ID.
func (s *sessions) create(ctx context.Context, tok adminapi.Token) (string, error) {
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", err
	}
	raw, err := json.Marshal(session{Name: tok.Name, MAC: sessionMAC(tok.Token, id), CSRF: csrf})
	if err != nil {
		return "", err
	}
	if err := s.rdb.Set(ctx, s.key(id), raw, s.ttl).Err(); err != nil {
		return "", fmt.Errorf("storing the session: %w", err)
	}
	return id, nil
}

// errNoSession reports a cookie with no live session behind it: expired,
// signed out, or never issued.
var errNoSession = errors.New("no such session")

// get returns the session of id; errNoSession when there is none.
func (s *sessions) get(ctx context.Context, id string) (*session, error) {
	raw, err := s.rdb.Get(ctx, s.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("reading the session: %w", err)
	}
	var sess session
	if err := json.Unmarshal(raw, &sess); err != nil {
		return nil, errNoSession // not one of ours: treated as absent
	}
	return &sess, nil
}

func (s *sessions) delete(ctx context.Context, id string) error {
	return s.rdb.Del(ctx, s.key(id)).Err()
}

// sessionMAC binds a session ID to the admin token that opened it.
func sessionMAC(token, id string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// tokens are the configured admin tokens the console accepts: every role
// but verify, which may call no route the console needs.
type tokens []adminapi.Token

// match returns the token equal to candidate, comparing digests of equal
// length against every token without stopping at a match; nil when none
// is equal.
func (ts tokens) match(candidate string) *adminapi.Token {
	d := sha256.Sum256([]byte(candidate))
	found := -1
	for i := range ts {
		td := sha256.Sum256([]byte(ts[i].Token))
		eq := subtle.ConstantTimeCompare(d[:], td[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return nil
	}
	return &ts[found]
}

// byName returns the token named name; nil when none is.
func (ts tokens) byName(name string) *adminapi.Token {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// wellFormedToken reports whether t looks like what randomToken returns.
func wellFormedToken(t string) bool {
	b, err := base64.RawURLEncoding.DecodeString(t)
	return err == nil && len(b) == 32
}

// equal compares two tokens in constant time; an empty one never matches.
func equal(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// setCookie sets a console cookie: HttpOnly, SameSite=Strict, Path
// /console, Secure when the request came over TLS (or the console is told
// it always does). maxAge < 0 deletes it; 0 makes it last the browser
// session.
func (h *handler) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     Path,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   h.secure(r),
		SameSite: http.SameSiteStrictMode,
	})
}

func (h *handler) secure(r *http.Request) bool { return r.TLS != nil || h.opts.SecureCookies }

// cookie returns the value of the named cookie; "" when absent.
func cookie(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}
