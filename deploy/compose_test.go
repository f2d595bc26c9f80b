package deploy

import (
	"cmp"
	"context"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads compose.yaml with compose-go, the library Docker
// Compose uses: the Compose Specification's schema (a misspelt key fails),
// merges, references to services and volumes, and interpolation with no
// variable set (the defaults are what a fresh checkout runs with; a
// required variable fails). It returns the keygate services' invocations.
func loadCompose(t *testing.T) (*types.Project, []*invocation) {
	t.Helper()
	dir := filepath.Join(repoRoot, "deploy")
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml")}},
		Environment: types.Mapping{},
	})
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var invs []*invocation
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		if imageRepo(s.Image) != keygateRepo(t) || len(s.Command) == 0 {
			continue
		}
		inv := &invocation{where: "compose.yaml: service " + name, cmd: s.Command[0], args: s.Command[1:], env: map[string]string{}}
		for k, v := range s.Environment {
			inv.env[k] = *cmp.Or(v, new(string))
		}
		invs = append(invs, inv)
	}
	return p, invs
}

func TestCompose(t *testing.T) {
	p, invs := loadCompose(t)
	var ps problems
	add := func(format string, args ...any) { ps.add("compose.yaml: "+format, args...) }
	// Redis with AOF on a named volume.
	redis := p.Services["redis"]
	if !strings.HasPrefix(redis.Image, "redis:7") || !strings.Contains(strings.Join(redis.Command, " ")+" ", "--appendonly yes ") {
		add("service redis: image %q command %q, want redis:7 with --appendonly yes", redis.Image, redis.Command)
	}
	if !slices.ContainsFunc(redis.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Type == types.VolumeTypeVolume && v.Target == "/data" }) {
		add("service redis keeps /data on no named volume: the AOF would die with the container")
	}
	// One serve and one sidecar: TestComposeRuns runs them.
	for _, inv := range invs {
		s := p.Services[strings.TrimPrefix(inv.where, "compose.yaml: service ")]
		ps = append(ps, inv.problems()...)
		if len(s.Entrypoint) > 0 || s.Build == nil || s.Build.Context != repoRoot || s.Build.Dockerfile != "deploy/Dockerfile" || !s.ReadOnly {
			add("service %s: want the image's entrypoint, build from the repository root with deploy/Dockerfile, read_only: true", s.Name)
		}
		// Published ports are keygate's listeners; a published ops port must
		// not listen on loopback inside the container.
		published := map[int]bool{}
		for _, sp := range s.Ports {
			if published[int(sp.Target)] = true; int(sp.Target) != inv.port("listen") && (inv.cmd != "sidecar" || int(sp.Target) != inv.port("ops-listen")) {
				add("service %s: port %d is no listener of keygate %s", s.Name, sp.Target, inv.cmd)
			}
		}
		if !published[inv.port("listen")] {
			add("service %s: keygate %s listens on %q but no port publishes it", s.Name, inv.cmd, inv.value("listen"))
		}
		if host, op, _ := splitHostPort(inv.value("ops-listen")); inv.cmd == "sidecar" && published[op] && isLoopback(host) {
			add("service %s: publishes the ops port %d but --ops-listen is %q, unreachable from outside the container", s.Name, op, inv.value("ops-listen"))
		}
		// Redis and the upstream are services of this file.
		if u, err := url.Parse(inv.value("redis-url")); err != nil || s.DependsOn[u.Hostname()].Condition == "" {
			add("service %s does not depend on %q, its Redis", s.Name, inv.value("redis-url"))
		}
		if u, err := url.Parse(inv.value("upstream")); inv.cmd == "sidecar" && (err != nil || p.Services[u.Hostname()].Name == "") {
			add("service %s: upstream %q is no service of this file", s.Name, inv.value("upstream"))
		}
		if inv.cmd == "serve" && !strings.Contains(inv.value("admin-tokens"), "CHANGE-ME") {
			add("service %s: the default admin token %q must say it is a placeholder (CHANGE-ME)", s.Name, inv.value("admin-tokens"))
		}
	}
	report(t, append(ps, shared(invs)...))
}

// TestComposeRuns runs both keygate services as compose.yaml configures
// them: the ops endpoints answer where the file publishes them, and the
// README's session works through them.
func TestComposeRuns(t *testing.T) {
	_, invs := loadCompose(t)
	for _, inv := range invs {
		checkProbes(t, inv, healthProbes(inv))
	}
	serve, sidecar := session(t, mustOne(t, invs, "serve"), mustOne(t, invs, "sidecar"))
	sidecar.stop(t)
	serve.stop(t)
}

// keygateRepo is the image repository every file uses for keygate: the one
// kustomization.yaml rewrites.
func keygateRepo(t *testing.T) string {
	t.Helper()
	k := kustomization(t)
	if len(k.Images) != 1 || k.Images[0].Name == "" {
		t.Fatalf("k8s/kustomization.yaml: want one images: entry naming the keygate image, found %d", len(k.Images))
	}
	return k.Images[0].Name
}
