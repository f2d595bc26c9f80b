package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const modulePath = "github.com/keygate/keygate"

// testVersion is stamped into the test binary the way the Dockerfile stamps
// the release version, so that TestVersionLdflag proves the -X target exists.
const testVersion = "deploytest-1"

var (
	repoRoot string // the module root, found from this package's directory
	keygate  string // the binary built by TestMain
	// commands are the long-running subcommands, as their --help lists them.
	commands = map[string]*command{}
)

// command is one keygate subcommand and its flags, read from its --help.
type command struct {
	name  string
	help  string
	flags map[string]flagInfo // by flag name
	byEnv map[string]flagInfo // by environment variable
}

type flagInfo struct {
	name string // without dashes
	env  string // as --help prints it
	def  string // the default --help prints, "" when none
}

func (f flagInfo) isBool() bool { return f.def == "false" || f.def == "true" }

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "deploy: "+format+"\n", args...)
		return 1
	}
	wd, err := os.Getwd()
	if err != nil {
		return fail("%v", err)
	}
	repoRoot = filepath.Dir(wd)
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil || !strings.Contains(string(mod), "module "+modulePath+"\n") {
		return fail("%s is not the root of %s (go.mod: %v)", repoRoot, modulePath, err)
	}
	dir, err := os.MkdirTemp("", "keygate-deploy-test")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)
	keygate = filepath.Join(dir, "keygate")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+testVersion, "-o", keygate, "./cmd/keygate")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fail("building keygate: %v", err)
	}
	for _, name := range []string{"serve", "sidecar"} {
		c, err := readHelp(name)
		if err != nil {
			return fail("%v", err)
		}
		commands[name] = c
	}
	return m.Run()
}

// helpFlag is a flag line of --help: "  --redis-url  KEYGATE_REDIS_URL".
var (
	helpFlag    = regexp.MustCompile(`^  --([a-z0-9][a-z0-9-]*)  (\S+)$`)
	helpDefault = regexp.MustCompile(`\(default ([^)]*)\)$`)
)

// readHelp runs "keygate NAME --help" and reads its flags.
func readHelp(name string) (*command, error) {
	cmd := exec.Command(keygate, name, "--help")
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("keygate %s --help: %v\n%s", name, err, out.String())
	}
	c := &command{name: name, help: out.String(), flags: map[string]flagInfo{}, byEnv: map[string]flagInfo{}}
	last := "" // the flag whose usage line comes next
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		if m := helpFlag.FindStringSubmatch(line); m != nil {
			c.flags[m[1]] = flagInfo{name: m[1], env: m[2]}
			last = m[1]
			continue
		}
		if last != "" {
			if m := helpDefault.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
				f := c.flags[last]
				f.def = m[1]
				c.flags[last] = f
			}
			last = ""
		}
	}
	if len(c.flags) == 0 {
		return nil, fmt.Errorf("keygate %s --help lists no flag in the form \"  --flag  KEYGATE_FLAG\":\n%s", name, c.help)
	}
	for _, f := range c.flags {
		c.byEnv[f.env] = f
	}
	return c, nil
}

// envFor is the documented rule: --redis-url is KEYGATE_REDIS_URL.
func envFor(flag string) string {
	return "KEYGATE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// cleanEnv is the test's environment without KEYGATE_ variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYGATE_") {
			out = append(out, kv)
		}
	}
	return out
}

func TestHelpFollowsTheEnvRule(t *testing.T) {
	for _, c := range commands {
		for _, f := range c.flags {
			if f.env != envFor(f.name) {
				t.Errorf("keygate %s --help: --%s is read from %s, the rule says %s", c.name, f.name, f.env, envFor(f.name))
			}
		}
	}
	// The flags these files rely on; each file's own checks say where.
	for cmd, names := range map[string][]string{
		"serve":   {"listen", "redis-url", "admin-tokens", "hash-key", "data-dir"},
		"sidecar": {"listen", "ops-listen", "upstream", "redis-url", "hash-key", "public", "require-scopes"},
	} {
		for _, n := range names {
			if _, ok := commands[cmd].flags[n]; !ok {
				t.Errorf("keygate %s --help has no --%s", cmd, n)
			}
		}
	}
}

func TestVersionLdflag(t *testing.T) {
	out, err := exec.Command(keygate, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("keygate version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), " "+testVersion+" ") {
		t.Errorf("keygate built with -ldflags \"-X main.version=%s\" says %q: the Dockerfile's version stamp would be lost", testVersion, out)
	}
}

// invocation is one configured keygate process: a compose service, a
// Kubernetes container or a systemd unit.
type invocation struct {
	where string            // for messages: "compose.yaml: service sidecar"
	cmd   string            // the subcommand
	args  []string          // what follows the subcommand
	env   map[string]string // every variable the configuration sets
}

// problems checks the invocation against the binary's help.
func (inv *invocation) problems() []string {
	var out []string
	add := func(format string, args ...any) {
		out = append(out, inv.where+": "+fmt.Sprintf(format, args...))
	}
	c, ok := commands[inv.cmd]
	if !ok {
		add("%q is not a keygate command that serves (want serve or sidecar)", inv.cmd)
		return out
	}
	if _, err := inv.flagArgs(); err != nil {
		add("%v", err)
	}
	for _, k := range sortedKeys(inv.env) {
		if strings.HasPrefix(k, "KEYGATE_") {
			if _, ok := c.byEnv[k]; !ok {
				add("%s is not read by keygate %s (its variables: %s)", k, inv.cmd, strings.Join(sortedKeys(c.byEnv), " "))
			}
		}
	}
	if inv.cmd == "serve" || inv.cmd == "sidecar" {
		if _, _, err := splitHostPort(inv.value("listen")); err != nil {
			add("--listen %q: %v", inv.value("listen"), err)
		}
	}
	if inv.cmd == "sidecar" {
		if _, _, err := splitHostPort(inv.value("ops-listen")); err != nil {
			add("--ops-listen %q: %v", inv.value("ops-listen"), err)
		}
		if inv.value("upstream") == "" {
			add("the sidecar has no upstream (KEYGATE_UPSTREAM or --upstream)")
		}
		if inv.value("redis-url") == "" && inv.value("redis-addrs") == "" {
			add("the sidecar has no Redis (KEYGATE_REDIS_URL or KEYGATE_REDIS_ADDRS): it cannot use the embedded store")
		}
	}
	return out
}

// flagArgs parses the flags after the subcommand as Go's flag package does:
// -f, --f, -f=v, --f=v, "-f v" for non-boolean flags.
func (inv *invocation) flagArgs() (map[string][]string, error) {
	c, ok := commands[inv.cmd]
	if !ok {
		return nil, fmt.Errorf("unknown command %q", inv.cmd)
	}
	out := map[string][]string{}
	for i := 0; i < len(inv.args); i++ {
		a := inv.args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return nil, fmt.Errorf("argument %q: keygate %s takes no positional arguments", a, inv.cmd)
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f, ok := c.flags[name]
		if !ok {
			return nil, fmt.Errorf("keygate %s has no flag --%s", inv.cmd, name)
		}
		if !hasVal {
			if f.isBool() {
				val = "true"
			} else {
				if i+1 == len(inv.args) {
					return nil, fmt.Errorf("--%s needs a value", name)
				}
				i++
				val = inv.args[i]
			}
		}
		out[name] = append(out[name], val)
	}
	return out, nil
}

// value is what the binary will use for a flag: the command line wins, then
// the environment, then the default.
func (inv *invocation) value(flag string) string {
	if fa, err := inv.flagArgs(); err == nil {
		if v := fa[flag]; len(v) > 0 {
			return v[len(v)-1]
		}
	}
	if v := inv.env[envFor(flag)]; v != "" {
		return v
	}
	if c, ok := commands[inv.cmd]; ok {
		return c.flags[flag].def
	}
	return ""
}

// port is the port of a listen flag's address (0 when it does not parse).
func (inv *invocation) port(flag string) int {
	_, p, _ := splitHostPort(inv.value(flag))
	return p
}

// healthFlag is the flag whose listener serves /metrics, /healthz and
// /readyz: serve's main listener, the sidecar's ops listener.
func (inv *invocation) healthFlag() string {
	if inv.cmd == "sidecar" {
		return "ops-listen"
	}
	return "listen"
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in 1-65535", p)
	}
	return host, port, nil
}

// isLoopback reports whether a listen host is reachable only from inside
// the container, pod or host itself.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// imageRepo is an image reference without its tag or digest.
func imageRepo(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// report fails t with every problem, one per line.
func report(t *testing.T, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Error(p)
	}
}

// readFile reads a file under deploy/.
func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestEveryYAMLParses parses every YAML file under deploy/, every document
// of each, so that none is left unchecked; the forward-auth configurations,
// which have no test of their own here, must also point at serve's port.
func TestEveryYAMLParses(t *testing.T) {
	_, servePort, err := splitHostPort(commands["serve"].flags["listen"].def)
	if err != nil {
		t.Fatalf("keygate serve --listen default: %v", err)
	}
	n := 0
	err = filepath.WalkDir(filepath.Join(repoRoot, "deploy"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (!strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml")) {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(repoRoot, "deploy"), path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for doc := 1; ; doc++ {
			var v any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s: document %d: %v", rel, doc, err)
				break
			}
			if strings.HasPrefix(rel, "forward-auth/") {
				for _, s := range yamlStrings(v) {
					u, err := url.Parse(s)
					if err == nil && u.Host != "" && strings.HasPrefix(u.Path, "/forward-auth") && u.Port() != strconv.Itoa(servePort) {
						t.Errorf("%s: %s is not keygate serve's default port %d", rel, s, servePort)
					}
				}
			}
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("parsed only %d YAML files under deploy/", n)
	}
}

// yamlStrings are every string value of a decoded YAML tree.
func yamlStrings(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case map[string]any:
		var out []string
		for _, e := range x {
			out = append(out, yamlStrings(e)...)
		}
		return out
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, yamlStrings(e)...)
		}
		return out
	}
	return nil
}
