package boundaries

import (
	"os/exec"
	"strings"
	"testing"
)

// Modules that some users of keygate's packages must not build.
const (
	echo       = "github.com/labstack/echo/"
	goRedis    = "github.com/redis/go-redis/"
	prometheus = "github.com/prometheus/"
	miniredis  = "github.com/alicebob/miniredis/"
	grpc       = "google.golang.org/grpc"
)

// TestDependencies runs "go list -deps" on each package and fails for every
// dependency in a module that package's users must not build: Echo for a
// net/http user of middleware (and for the admin API, which it imports,
// keystore and sidecar); gRPC for sidecar (only sidecar/extauthz needs it);
// Redis, Prometheus and the embedded store's miniredis for the Go client
// and the wire types it shares with keystore; miniredis for every one.
func TestDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH (go test puts it there): %v", err)
	}
	tests := []struct {
		pkg    string
		forbid []string
	}{
		{"github.com/keygate/keygate/keystore", []string{echo, miniredis}},
		{"github.com/keygate/keygate/middleware", []string{echo, miniredis}},
		{"github.com/keygate/keygate/sidecar", []string{echo, miniredis, grpc}},
		{"github.com/keygate/keygate/keystore/adminapi", []string{echo, miniredis}},
		{"github.com/keygate/keygate/keystore/client", []string{echo, goRedis, prometheus, miniredis}},
		{"github.com/keygate/keygate/keystore/apikey", []string{echo, goRedis, prometheus, miniredis}},
		{"github.com/keygate/keygate/keystore/audit/auditevent", []string{echo, goRedis, prometheus, miniredis}},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.pkg, "github.com/keygate/keygate/"), func(t *testing.T) {
			out, err := exec.Command(goCmd, "list", "-deps", tc.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", tc.pkg, err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) == 0 || deps[len(deps)-1] != tc.pkg {
				t.Fatalf("go list -deps %s does not end with the package itself: %q", tc.pkg, out)
			}
			for _, f := range tc.forbid {
				var found []string
				for _, dep := range deps {
					if strings.HasPrefix(dep, f) {
						found = append(found, dep)
					}
				}
				if len(found) > 0 {
					t.Errorf("%s builds %d packages of %s, such as %s (docs/packages.md says who imports what)", tc.pkg, len(found), f, found[0])
				}
			}
		})
	}
}
