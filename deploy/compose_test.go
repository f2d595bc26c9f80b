package deploy

import (
	"context"
	"fmt"
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
// Compose itself uses: the Compose Specification's schema (a misspelt key
// fails), interpolation with none of the variables set (the defaults are
// what a fresh checkout runs with; a required one fails), merges, and
// references to services and volumes.
func loadCompose(t *testing.T) *types.Project {
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
	return p
}

// composeKeygate are the invocations of the services that run the keygate
// image, by service name.
func composeKeygate(t *testing.T, p *types.Project) map[string]*invocation {
	out := map[string]*invocation{}
	for name, s := range p.Services {
		if imageRepo(s.Image) != keygateRepo(t) {
			continue
		}
		inv := &invocation{where: "compose.yaml: service " + name, env: map[string]string{}}
		if len(s.Command) > 0 {
			inv.cmd, inv.args = s.Command[0], s.Command[1:]
		}
		for k, v := range s.Environment {
			if v != nil {
				inv.env[k] = *v
			}
		}
		out[name] = inv
	}
	return out
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, "compose.yaml: "+fmt.Sprintf(format, args...))
	}

	// Redis with AOF on a named volume.
	if redis, ok := p.Services["redis"]; !ok {
		add("no service named redis")
	} else {
		if !strings.HasPrefix(redis.Image, "redis:7") {
			add("redis image %q, want redis:7…", redis.Image)
		}
		if !strings.Contains(" "+strings.Join(redis.Command, " ")+" ", " --appendonly yes ") {
			add("redis command %q lacks --appendonly yes", redis.Command)
		}
		if !slices.ContainsFunc(redis.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == "/data"
		}) {
			add("redis keeps /data on no named volume: the AOF would die with the container")
		}
	}

	invs := composeKeygate(t, p)
	byCmd := map[string][]string{}
	for name, inv := range invs {
		s := p.Services[name]
		byCmd[inv.cmd] = append(byCmd[inv.cmd], name)
		problems = append(problems, inv.problems()...)
		if len(s.Entrypoint) > 0 {
			add("service %s: entrypoint %q replaces the image's binary", name, s.Entrypoint)
		}
		if s.Build == nil || s.Build.Context != repoRoot || s.Build.Dockerfile != "deploy/Dockerfile" {
			add("service %s: build should be the repository root with deploy/Dockerfile, got %+v", name, s.Build)
		}
		if !s.ReadOnly {
			add("service %s: keygate writes nothing with Redis configured; set read_only: true", name)
		}
		// Published ports are keygate's listeners; the ops port must not be
		// on loopback inside the container, or publishing it reaches nothing.
		published := map[int]bool{}
		for _, sp := range s.Ports {
			published[int(sp.Target)] = true
			if l := int(sp.Target); l != inv.port("listen") && (inv.cmd != "sidecar" || l != inv.port("ops-listen")) {
				add("service %s: port %d is no listener of keygate %s", name, l, inv.cmd)
			}
		}
		if !published[inv.port("listen")] {
			add("service %s: keygate %s listens on %q but no port publishes it", name, inv.cmd, inv.value("listen"))
		}
		if host, op, _ := splitHostPort(inv.value("ops-listen")); inv.cmd == "sidecar" && published[op] && isLoopback(host) {
			add("service %s: publishes the ops port %d but --ops-listen is %q, unreachable from outside the container", name, op, inv.value("ops-listen"))
		}
		// Redis and the upstream are services of this file.
		if u, err := url.Parse(inv.value("redis-url")); err == nil && u.Host != "" {
			if _, ok := s.DependsOn[u.Hostname()]; !ok {
				add("service %s does not depend on %s, its Redis", name, u.Hostname())
			}
		}
		if inv.cmd == "sidecar" {
			if u, err := url.Parse(inv.value("upstream")); err != nil || p.Services[u.Hostname()].Name == "" {
				add("service %s: upstream %q is no service of this file", name, inv.value("upstream"))
			}
		}
		if inv.cmd == "serve" && !strings.Contains(inv.value("admin-tokens"), "CHANGE-ME") {
			add("service %s: the default admin token %q must say it is a placeholder (CHANGE-ME)", name, inv.value("admin-tokens"))
		}
	}
	for _, cmd := range []string{"serve", "sidecar"} {
		if len(byCmd[cmd]) != 1 {
			add("want one service running keygate %s (image %s), found %v", cmd, keygateRepo(t), byCmd[cmd])
		}
	}
	problems = append(problems, shared(sortedInvs(invs))...)
	report(t, problems)
}

// TestComposeRuns runs both keygate services as compose.yaml configures
// them: the ops endpoints answer where the file publishes them, and the
// README's session works through them.
func TestComposeRuns(t *testing.T) {
	invs := sortedInvs(composeKeygate(t, loadCompose(t)))
	for _, inv := range invs {
		checkProbes(t, inv, healthProbes(inv))
	}
	serve, sidecar := session(t, mustOne(t, invs, "serve"), mustOne(t, invs, "sidecar"))
	checkPublic(t, sidecar)
	sidecar.stop(t)
	serve.stop(t)
}

func sortedInvs(m map[string]*invocation) []*invocation {
	var out []*invocation
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return out
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
