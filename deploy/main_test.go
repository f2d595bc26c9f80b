package deploy

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/testkit"
)

const modulePath = "github.com/keygate/keygate"

// testVersion is stamped into the test binary the way the Dockerfile stamps
// the release version, so that TestVersionLdflag proves the -X target exists.
const testVersion = "deploytest-1"

// drainSeconds is how long keygate drains requests after SIGTERM
// (cmd/keygate/serve.go, runServers): a stop timeout must exceed it.
const drainSeconds = 20

var (
	repoRoot string // the repository root, above this module
	keygate  string // the binary built by TestMain
	// commands are the long-running subcommands, as their --help lists them.
	commands = map[string]*command{}
)

// command is one keygate subcommand and its flags, read from its --help.
type command struct {
	name  string
	flags map[string]*flagInfo // by flag name
	byEnv map[string]*flagInfo // by environment variable
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
	wd, _ := os.Getwd() // an error shows in the go.mod check below
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
	cmd.Env = testkit.CleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("keygate %s --help: %v\n%s", name, err, out.String())
	}
	help := out.String()
	c := &command{name: name, flags: map[string]*flagInfo{}, byEnv: map[string]*flagInfo{}}
	last := "" // the flag whose usage line comes next
	for _, line := range strings.Split(help, "\n") {
		if m := helpFlag.FindStringSubmatch(line); m != nil {
			c.flags[m[1]] = &flagInfo{name: m[1], env: m[2]}
			last = m[1]
			continue
		}
		if m := helpDefault.FindStringSubmatch(strings.TrimSpace(line)); m != nil && last != "" {
			c.flags[last].def = m[1]
		}
		last = ""
	}
	if len(c.flags) == 0 {
		return nil, fmt.Errorf("keygate %s --help lists no flag in the form \"  --flag  KEYGATE_FLAG\":\n%s", name, help)
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

func TestHelpFollowsTheEnvRule(t *testing.T) {
	for _, c := range commands {
		for _, f := range c.flags {
			if f.env != envFor(f.name) {
				t.Errorf("keygate %s --help: --%s is read from %s, the rule says %s", c.name, f.name, f.env, envFor(f.name))
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
func (inv *invocation) problems() problems {
	var out problems
	add := func(format string, args ...any) { out.add(inv.where+": "+format, args...) }
	c, ok := commands[inv.cmd]
	if !ok {
		add("%q is not a keygate command that serves (want serve or sidecar)", inv.cmd)
		return out
	}
	if _, err := inv.flagArgs(); err != nil {
		add("%v", err)
	}
	for _, k := range slices.Sorted(maps.Keys(inv.env)) {
		if _, ok := c.byEnv[k]; strings.HasPrefix(k, "KEYGATE_") && !ok {
			add("%s is not read by keygate %s (its variables: %s)", k, inv.cmd, strings.Join(slices.Sorted(maps.Keys(c.byEnv)), " "))
		}
	}
	listeners := []string{"listen"}
	if inv.cmd == "sidecar" {
		listeners = append(listeners, "ops-listen")
		if inv.value("upstream") == "" {
			add("the sidecar has no upstream (KEYGATE_UPSTREAM or --upstream)")
		}
		if inv.value("redis-url") == "" && inv.value("redis-addrs") == "" {
			add("the sidecar has no Redis (KEYGATE_REDIS_URL or KEYGATE_REDIS_ADDRS): it cannot use the embedded store")
		}
	}
	for _, l := range listeners {
		if _, _, err := splitHostPort(inv.value(l)); err != nil {
			add("--%s %q: %v", l, inv.value(l), err)
		}
	}
	return out
}

// flagArgs parses the flags after the subcommand with Go's flag package, as
// the binary does, and returns the value of each flag given.
func (inv *invocation) flagArgs() (map[string]string, error) {
	fs := flag.NewFlagSet(inv.cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range commands[inv.cmd].flags {
		if f.isBool() {
			fs.Bool(f.name, false, "")
		} else {
			fs.String(f.name, "", "")
		}
	}
	if err := fs.Parse(inv.args); err != nil || fs.NArg() > 0 {
		return nil, fmt.Errorf("keygate %s %q: %v (no positional arguments: %q)", inv.cmd, inv.args, err, fs.Args())
	}
	given := map[string]string{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = f.Value.String() })
	return given, nil
}

// value is what the binary will use for a flag: the command line wins, then
// the environment, then the default.
func (inv *invocation) value(flag string) string {
	if given, err := inv.flagArgs(); err == nil && given[flag] != "" {
		return given[flag]
	}
	if v := inv.env[envFor(flag)]; v != "" {
		return v
	}
	if f := commands[inv.cmd].flags[flag]; f != nil {
		return f.def
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
	return cmp.Or(map[string]string{"sidecar": "ops-listen"}[inv.cmd], "listen")
}

// shared checks what every keygate process of one deployment must agree on:
// the Redis they use, the namespace of its keys, the secret prefix and the
// hash key. A sidecar with another hash key refuses every key serve creates.
func shared(invs []*invocation) problems {
	var out problems
	for _, flag := range []string{"redis-url", "namespace", "key-prefix", "hash-key"} {
		for _, inv := range invs[min(1, len(invs)):] {
			if first := invs[0]; inv.value(flag) != first.value(flag) {
				out.add("%s and %s disagree on --%s (%s): %q and %q", first.where, inv.where, flag, envFor(flag), first.value(flag), inv.value(flag))
			}
		}
	}
	return out
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
	return host == "localhost" || net.ParseIP(host).IsLoopback()
}

// imageRepo is an image reference without its tag or digest.
func imageRepo(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// problems collects what is wrong with the files, to report it all at once.
type problems []string

func (ps *problems) add(format string, args ...any) { *ps = append(*ps, fmt.Sprintf(format, args...)) }

// report fails t with every problem, one per line.
func report(t *testing.T, ps problems) {
	t.Helper()
	for _, p := range ps {
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
