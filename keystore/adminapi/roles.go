package adminapi

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/keygate/keygate/internal/apierror"
)

// Role is what an admin token may do.
type Role string

// The roles, from most to least powerful.
const (
	// RoleAdmin may call every route.
	RoleAdmin Role = "admin"
	// RoleManage may call every route but delete and import.
	RoleManage Role = "manage"
	// RoleRead may get, list, read usage and audit events.
	RoleRead Role = "read"
	// RoleVerify may call POST /api_keys/verify only.
	RoleVerify Role = "verify"
)

// Token is a named admin token and its role. The name is what audit events
// and logs show of it; the token itself is never shown.
type Token struct {
	Name  string
	Role  Role
	Token string
}

// permission is what a route needs.
type permission int

const (
	permRead   permission = iota // get, list, usage, audit events
	permVerify                   // POST /api_keys/verify
	permChange                   // create, update, revoke; roll, enable and disable, bulk revoke
	permAdmin                    // delete, import, and any route not listed below
)

// routePermissions gives each route label ("METHOD pattern") the permission
// it needs. A route missing here needs the admin role, so that a new route
// is closed to the other roles until it is listed.
var routePermissions = map[string]permission{
	"GET /api_keys":              permRead,
	"GET /api_keys/{id}":         permRead,
	"GET /api_keys/{id}/secret":  permRead,
	"GET /api_keys/{id}/usage":   permRead,
	"GET /audit_events":          permRead,
	"POST /api_keys/verify":      permVerify,
	"POST /api_keys":             permChange,
	"PATCH /api_keys/{id}":       permChange,
	"POST /api_keys/{id}/revoke": permChange,
	"POST /api_keys/{id}/roll":   permChange,
	"POST /api_keys/revoke_all":  permChange,
	"DELETE /api_keys/{id}":      permAdmin,
	"POST /api_keys/import":      permAdmin,
}

// may reports whether role may call the route labelled label.
func (r Role) may(label string) bool {
	need, ok := routePermissions[label]
	if !ok {
		need = permAdmin
	}
	return r.allows(need)
}

// MayChange reports whether the role may create, update, revoke, roll,
// enable and disable keys and revoke a subject's keys (admin and manage).
func (r Role) MayChange() bool { return r.allows(permChange) }

// allows reports whether the role has the permission need.
func (r Role) allows(need permission) bool {
	switch r {
	case RoleAdmin:
		return true
	case RoleManage:
		return need != permAdmin
	case RoleRead:
		return need == permRead
	case RoleVerify:
		return need == permVerify
	}
	return false
}

func (r Role) valid() bool {
	return r == RoleAdmin || r == RoleManage || r == RoleRead || r == RoleVerify
}

func forbidden(t *adminToken, label string) *apierror.Error {
	return &apierror.Error{Status: http.StatusForbidden, Code: "authorization_invalid", Message: "not authorized",
		LongMessage: fmt.Sprintf("the admin token %q has the role %s, which may not call %s", t.name, t.role, label)}
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

// BareTokens names tokens given without a name or role (KEYGATE_ADMIN_TOKENS):
// each is an admin, named token-1, token-2, … in order; empty ones are
// skipped and not counted.
func BareTokens(tokens []string) []Token {
	var out []Token
	for _, t := range tokens {
		if t != "" {
			out = append(out, Token{Name: "token-" + strconv.Itoa(len(out)+1), Role: RoleAdmin, Token: t})
		}
	}
	return out
}

// ParseTokenFile reads KEYGATE_ADMIN_TOKENS_FILE: one token a line, as
// NAME ROLE TOKEN separated by spaces or tabs; blank lines and lines
// starting with # are skipped. An error names the line, never its token.
func ParseTokenFile(r io.Reader) ([]Token, error) {
	var out []Token
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want NAME ROLE TOKEN, found %d fields", n, len(f))
		}
		out = append(out, Token{Name: f[0], Role: Role(f[1]), Token: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no token in it")
	}
	return out, nil
}

// CheckTokens reports, naming the token but never repeating it, the first
// token with a bad name or role, a token shorter than [MinAdminTokenLen]
// characters, and a name or token given twice.
func CheckTokens(tokens []Token) error {
	names := map[string]bool{}
	secrets := map[string]string{}
	for _, t := range tokens {
		switch {
		case !tokenName.MatchString(t.Name):
			return fmt.Errorf("token name %q must be 1 to 64 letters, digits or . _ @ -", t.Name)
		case !t.Role.valid():
			return fmt.Errorf("token %s: role %q must be admin, manage, read or verify", t.Name, t.Role)
		case utf8.RuneCountInString(t.Token) < MinAdminTokenLen:
			return fmt.Errorf("token %s has %d characters; each needs at least %d (openssl rand -hex 32 makes one)",
				t.Name, utf8.RuneCountInString(t.Token), MinAdminTokenLen)
		case names[t.Name]:
			return fmt.Errorf("token name %s is given twice", t.Name)
		case secrets[t.Token] != "":
			return fmt.Errorf("tokens %s and %s are the same token", secrets[t.Token], t.Name)
		}
		names[t.Name] = true
		secrets[t.Token] = t.Name
	}
	return nil
}
