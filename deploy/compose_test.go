package deploy

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeServiceKeys are the keys of a compose service (the Compose
// Specification); anything else is a typo compose would reject.
var composeServiceKeys = setOf(`annotations attach blkio_config build cap_add cap_drop cgroup
	cgroup_parent command configs container_name cpu_count cpu_percent cpu_period cpu_quota
	cpu_rt_period cpu_rt_runtime cpu_shares cpus cpuset credential_spec depends_on deploy develop
	device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint env_file environment
	expose extends external_links extra_hosts gpus group_add healthcheck hostname image init ipc
	isolation label_file labels links logging mac_address mem_limit mem_reservation mem_swappiness
	memswap_limit network_mode networks oom_kill_disable oom_score_adj pid pids_limit platform
	ports post_start pre_stop privileged profiles pull_policy read_only restart runtime scale
	secrets security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls
	tmpfs tty ulimits user userns_mode uts volumes volumes_from working_dir`)

var composeTopKeys = setOf(`name services volumes networks configs secrets include`)

func setOf(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

type composeService struct {
	Image       string   `yaml:"image"`
	Build       any      `yaml:"build"`
	Command     any      `yaml:"command"`
	Entrypoint  any      `yaml:"entrypoint"`
	Environment any      `yaml:"environment"`
	Ports       []any    `yaml:"ports"`
	Volumes     []any    `yaml:"volumes"`
	DependsOn   any      `yaml:"depends_on"`
	NetworkMode string   `yaml:"network_mode"`
	ReadOnly    bool     `yaml:"read_only"`
	CapDrop     []string `yaml:"cap_drop"`
	User        string   `yaml:"user"`
}

type composeProject struct {
	raw      map[string]any
	services map[string]composeService
	env      map[string]map[string]string // by service, interpolated
	volumes  map[string]bool
}

// interpolation is compose's ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR
// and $$. The test reads the file as compose would with none of the
// variables set: the defaults are what a fresh checkout runs with.
var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func interpolate(s string) (string, error) {
	var err error
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := interpolation.FindStringSubmatch(m)
		switch sub[2] {
		case "", ":+", "+":
			return ""
		case ":-", "-":
			return sub[3]
		default: // :? and ?: required
			err = fmt.Errorf("%s must be set: the file does not work out of the box", m)
			return ""
		}
	})
	return out, err
}

// interpolateAll interpolates every string value (not keys) of a decoded
// YAML tree.
func interpolateAll(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return interpolate(x)
	case map[string]any:
		for k, e := range x {
			r, err := interpolateAll(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			x[k] = r
		}
	case []any:
		for i, e := range x {
			r, err := interpolateAll(e)
			if err != nil {
				return nil, err
			}
			x[i] = r
		}
	}
	return v, nil
}

func loadCompose(t *testing.T) *composeProject {
	t.Helper()
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, "compose.yaml")), &raw); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	if _, err := interpolateAll(raw); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	p := &composeProject{raw: raw, services: map[string]composeService{}, env: map[string]map[string]string{}, volumes: map[string]bool{}}
	services, _ := raw["services"].(map[string]any)
	if len(services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	for name, v := range services {
		var s composeService
		if err := decodeLoose(v, &s); err != nil {
			t.Fatalf("compose.yaml: service %s: %v", name, err)
		}
		p.services[name] = s
		env, err := composeEnv(s.Environment)
		if err != nil {
			t.Fatalf("compose.yaml: service %s: environment: %v", name, err)
		}
		p.env[name] = env
	}
	if vols, ok := raw["volumes"].(map[string]any); ok {
		for k := range vols {
			p.volumes[k] = true
		}
	}
	return p
}

// composeEnv reads environment as a map or as a list of NAME=VALUE.
func composeEnv(v any) (map[string]string, error) {
	env := map[string]string{}
	switch x := v.(type) {
	case nil:
	case map[string]any:
		for k, e := range x {
			switch ev := e.(type) {
			case string:
				env[k] = ev
			case nil:
				env[k] = ""
			default:
				// compose accepts numbers and booleans; keep their text.
				env[k] = fmt.Sprint(ev)
			}
		}
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("entry %v is not NAME=VALUE", e)
			}
			k, val, _ := strings.Cut(s, "=")
			env[k] = val
		}
	default:
		return nil, fmt.Errorf("neither a map nor a list")
	}
	return env, nil
}

// words is a compose command or entrypoint: a list, or a string split on
// white space.
func words(v any) []string {
	switch x := v.(type) {
	case string:
		return strings.Fields(x)
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

// containerPorts are the container sides of a service's ports, with
// whether the host side is bound to loopback.
func containerPorts(ports []any) (map[int]string, error) {
	out := map[int]string{}
	for _, p := range ports {
		switch x := p.(type) {
		case string:
			spec := strings.TrimSuffix(strings.TrimSuffix(x, "/tcp"), "/udp")
			parts := strings.Split(spec, ":")
			n, err := strconv.Atoi(parts[len(parts)-1])
			if err != nil {
				return nil, fmt.Errorf("port %q: container port is not a number", x)
			}
			hostIP := ""
			if len(parts) == 3 {
				hostIP = parts[0]
			}
			out[n] = hostIP
		case map[string]any:
			n, ok := x["target"].(int)
			if !ok {
				return nil, fmt.Errorf("port %v: no numeric target", x)
			}
			ip, _ := x["host_ip"].(string)
			out[n] = ip
		case int:
			out[x] = ""
		default:
			return nil, fmt.Errorf("port %v: unknown form", p)
		}
	}
	return out, nil
}

// keygateInvocations are the compose services that run the keygate image.
func (p *composeProject) keygateInvocations(repo string) map[string]*invocation {
	out := map[string]*invocation{}
	for name, s := range p.services {
		argv := words(s.Command)
		_, built := s.Build.(map[string]any)
		isKeygate := imageRepo(s.Image) == repo || strings.Contains(s.Image, "keygate") || built ||
			(len(argv) > 0 && (argv[0] == "serve" || argv[0] == "sidecar"))
		if !isKeygate {
			continue
		}
		inv := &invocation{where: "compose.yaml: service " + name, env: p.env[name]}
		if len(argv) > 0 {
			inv.cmd, inv.args = argv[0], argv[1:]
		}
		out[name] = inv
	}
	return out
}

// keygateRepo is the image repository every file uses for keygate: the one
// kustomization.yaml rewrites.
func keygateRepo(t *testing.T) string {
	t.Helper()
	var k struct {
		Images []struct {
			Name string `yaml:"name"`
		} `yaml:"images"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, "k8s/kustomization.yaml")), &k); err != nil {
		t.Fatalf("k8s/kustomization.yaml: %v", err)
	}
	if len(k.Images) != 1 || k.Images[0].Name == "" {
		t.Fatalf("k8s/kustomization.yaml: want one images: entry naming the keygate image, found %d", len(k.Images))
	}
	return k.Images[0].Name
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	repo := keygateRepo(t)
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, "compose.yaml: "+fmt.Sprintf(format, args...))
	}

	for k := range p.raw {
		if !composeTopKeys[k] && !strings.HasPrefix(k, "x-") {
			add("unknown top-level key %q", k)
		}
	}
	for name, v := range p.raw["services"].(map[string]any) {
		m, _ := v.(map[string]any)
		for k := range m {
			if !composeServiceKeys[k] && !strings.HasPrefix(k, "x-") {
				add("service %s: unknown key %q", name, k)
			}
		}
		s := p.services[name]
		for _, dep := range dependsOn(s.DependsOn) {
			if _, ok := p.services[dep]; !ok {
				add("service %s depends on %q, which is no service", name, dep)
			}
		}
		for _, vol := range s.Volumes {
			if str, ok := vol.(string); ok {
				src, _, _ := strings.Cut(str, ":")
				if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") && !p.volumes[src] {
					add("service %s mounts volume %q, not declared under volumes:", name, src)
				}
			}
		}
		if s.Image == "" && s.Build == nil {
			add("service %s has neither image nor build", name)
		}
	}

	// Redis with AOF on a named volume.
	redis, ok := p.services["redis"]
	if !ok {
		add("no service named redis")
	} else {
		if !strings.HasPrefix(redis.Image, "redis:7") {
			add("redis image %q, want redis:7…", redis.Image)
		}
		if !strings.Contains(" "+strings.Join(words(redis.Command), " ")+" ", " --appendonly yes ") {
			add("redis command %q lacks --appendonly yes", words(redis.Command))
		}
		onData := false
		for _, vol := range redis.Volumes {
			if str, ok := vol.(string); ok {
				src, dst, _ := strings.Cut(str, ":")
				if p.volumes[src] && strings.HasPrefix(dst, "/data") {
					onData = true
				}
			}
		}
		if !onData {
			add("redis keeps /data on no named volume: the AOF would die with the container")
		}
	}

	invs := p.keygateInvocations(repo)
	byCmd := map[string][]string{}
	for name, inv := range invs {
		s := p.services[name]
		byCmd[inv.cmd] = append(byCmd[inv.cmd], name)
		if imageRepo(s.Image) != repo {
			add("service %s: image %q, want %s (the image kustomization.yaml names)", name, s.Image, repo)
		}
		problems = append(problems, inv.problems()...)
		if s.Entrypoint != nil {
			if e := words(s.Entrypoint); len(e) != 1 || e[0] != loadDockerfile(t).binaryPath() {
				add("service %s: entrypoint %q is not the image's binary", name, e)
			}
		}
		if b, ok := s.Build.(map[string]any); ok {
			ctx, _ := b["context"].(string)
			df, _ := b["dockerfile"].(string)
			if filepath.Clean(filepath.Join(repoRoot, "deploy", ctx)) != repoRoot || df != "deploy/Dockerfile" {
				add("service %s: build context %q and dockerfile %q are not the repository root and deploy/Dockerfile", name, ctx, df)
			}
		} else if s.Build != nil {
			add("service %s: build should name context and dockerfile", name)
		}
		if !s.ReadOnly {
			add("service %s: keygate writes nothing with Redis configured; set read_only: true", name)
		}
		ports, err := containerPorts(s.Ports)
		if err != nil {
			add("service %s: %v", name, err)
		}
		if lp := inv.port("listen"); ports != nil {
			if _, ok := ports[lp]; !ok {
				add("service %s: keygate %s listens on %d (--listen %q) but no port publishes it (published: %v)", name, inv.cmd, lp, inv.value("listen"), sortedInts(ports))
			}
			for cp := range ports {
				if cp != lp && (inv.cmd != "sidecar" || cp != inv.port("ops-listen")) {
					add("service %s: port %d is no listener of keygate %s", name, cp, inv.cmd)
				}
			}
			if inv.cmd == "sidecar" {
				host, op, _ := splitHostPort(inv.value("ops-listen"))
				if _, published := ports[op]; published && isLoopback(host) {
					add("service %s: publishes the ops port %d but --ops-listen is %q, unreachable from outside the container", name, op, inv.value("ops-listen"))
				}
			}
		}
		// Redis and upstream are services of this file.
		if u, err := url.Parse(inv.value("redis-url")); err == nil && u.Host != "" {
			if _, ok := p.services[u.Hostname()]; !ok {
				add("service %s: KEYGATE_REDIS_URL host %q is no service", name, u.Hostname())
			} else if !contains(dependsOn(s.DependsOn), u.Hostname()) {
				add("service %s does not depend on %s, its Redis", name, u.Hostname())
			}
		}
		if inv.cmd == "sidecar" {
			u, err := url.Parse(inv.value("upstream"))
			if err != nil || u.Host == "" {
				add("service %s: upstream %q is not a URL", name, inv.value("upstream"))
			} else if _, ok := p.services[u.Hostname()]; !ok {
				add("service %s: upstream host %q is no service", name, u.Hostname())
			}
		}
	}
	for _, cmd := range []string{"serve", "sidecar"} {
		if len(byCmd[cmd]) != 1 {
			add("want one service running keygate %s (image %s), found %v", cmd, repo, byCmd[cmd])
		}
	}
	// Everything serve and sidecars must share.
	problems = append(problems, shared(invsList(invs))...)
	if serve := findCmd(invs, "serve"); serve != nil && !strings.Contains(serve.value("admin-tokens"), "CHANGE-ME") {
		add("the default admin token %q must say it is a placeholder (CHANGE-ME)", serve.value("admin-tokens"))
	}
	report(t, problems)
}

// TestComposeRuns runs both keygate services as compose.yaml configures
// them: the ops endpoints answer where the file publishes them, and the
// README's session works through them.
func TestComposeRuns(t *testing.T) {
	p := loadCompose(t)
	invs := invsList(p.keygateInvocations(keygateRepo(t)))
	for _, inv := range invs {
		port := inv.port(inv.healthFlag())
		checkProbes(t, inv, []probe{
			{inv.where, "liveness", "/healthz", port},
			{inv.where, "readiness", "/readyz", port},
			{inv.where, "metrics", "/metrics", port},
		})
	}
	serve, sidecar, _, _ := session(t, mustOne(t, invs, "serve"), mustOne(t, invs, "sidecar"))
	// KEYGATE_PUBLIC: the upstream's health check needs no key.
	for _, prefix := range strings.Split(sidecar.inv.value("public"), ";") {
		if prefix = strings.TrimSpace(prefix); prefix != "" {
			if status, _ := get(t, "http://"+sidecar.listen+prefix, ""); status != 200 {
				t.Errorf("compose.yaml: public path %s without a key: %d, want 200", prefix, status)
			}
		}
	}
	sidecar.stop(t)
	serve.stop(t)
}

func dependsOn(v any) []string {
	switch x := v.(type) {
	case []any:
		return words(x)
	case map[string]any:
		return sortedKeys(x)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func sortedInts(m map[int]string) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func invsList(m map[string]*invocation) []*invocation {
	var out []*invocation
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func findCmd(m map[string]*invocation, cmd string) *invocation {
	for _, inv := range invsList(m) {
		if inv.cmd == cmd {
			return inv
		}
	}
	return nil
}

// shared checks what every keygate process of one deployment must agree on:
// the Redis they use, the namespace of its keys, the secret prefix and the
// hash key. A sidecar with another hash key refuses every key serve creates.
func shared(invs []*invocation) []string {
	var out []string
	for _, flag := range []string{"redis-url", "namespace", "key-prefix", "hash-key"} {
		var first *invocation
		for _, inv := range invs {
			if _, ok := commands[inv.cmd]; !ok {
				continue
			}
			if first == nil {
				first = inv
				continue
			}
			if inv.value(flag) != first.value(flag) {
				out = append(out, fmt.Sprintf("%s and %s disagree on --%s (%s): %q and %q", first.where, inv.where, flag, envFor(flag), first.value(flag), inv.value(flag)))
			}
		}
	}
	return out
}

// decodeLoose converts a decoded YAML tree into a typed value.
func decodeLoose(in, out any) error {
	b, err := yaml.Marshal(in)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(b, out)
}
