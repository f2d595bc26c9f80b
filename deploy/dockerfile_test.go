package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// dockerfile is what the tests need from deploy/Dockerfile.
type dockerfile struct {
	stages     []stage           // FROM lines, in order
	args       map[string]string // ARG defaults before the first FROM
	env        map[string]string // ENV of the final stage
	expose     []string
	user       string
	entrypoint []string // exec form
	cmd        []string // exec form
	runs       []string // RUN lines of every stage
	copies     []string // COPY lines of the final stage
	other      []string // every instruction, for keyword checks
}

type stage struct{ image, alias string }

var (
	dockerfileOnce sync.Once
	dockerfileVal  *dockerfile
	dockerfileErr  error
)

func loadDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	dockerfileOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "Dockerfile"))
		if err != nil {
			dockerfileErr = err
			return
		}
		dockerfileVal, dockerfileErr = parseDockerfile(string(b))
	})
	if dockerfileErr != nil {
		t.Fatalf("deploy/Dockerfile: %v", dockerfileErr)
	}
	return dockerfileVal
}

// parseDockerfile reads instructions, joining continuation lines and
// skipping comments and parser directives.
func parseDockerfile(src string) (*dockerfile, error) {
	d := &dockerfile{args: map[string]string{}, env: map[string]string{}}
	var logical []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	for _, ins := range logical {
		kw, rest, _ := strings.Cut(ins, " ")
		kw = strings.ToUpper(kw)
		rest = strings.TrimSpace(rest)
		d.other = append(d.other, kw+" "+rest)
		final := len(d.stages) > 0
		switch kw {
		case "FROM":
			fields := strings.Fields(rest)
			var s stage
			for i := 0; i < len(fields); i++ {
				switch {
				case strings.HasPrefix(fields[i], "--"):
				case strings.EqualFold(fields[i], "AS") && i+1 < len(fields):
					s.alias = fields[i+1]
					i++
				default:
					s.image = expandArgs(fields[i], d.args)
				}
			}
			d.stages = append(d.stages, s)
			// A stage starts with a fresh environment and user.
			d.env, d.user, d.copies = map[string]string{}, "", nil
			d.entrypoint, d.cmd, d.expose = nil, nil, nil
		case "ARG":
			if !final {
				name, def, _ := strings.Cut(rest, "=")
				d.args[name] = def
			}
		case "ENV":
			name, val, ok := strings.Cut(rest, "=")
			if !ok {
				name, val, _ = strings.Cut(rest, " ")
			}
			d.env[strings.TrimSpace(name)] = strings.Trim(strings.TrimSpace(val), `"`)
		case "EXPOSE":
			d.expose = append(d.expose, strings.Fields(rest)...)
		case "USER":
			d.user = rest
		case "ENTRYPOINT", "CMD":
			var form []string
			if err := json.Unmarshal([]byte(rest), &form); err != nil {
				return nil, fmt.Errorf("%s %s: use the exec form [\"…\"] (there is no shell in the image): %v", kw, rest, err)
			}
			if kw == "ENTRYPOINT" {
				d.entrypoint = form
			} else {
				d.cmd = form
			}
		case "RUN":
			d.runs = append(d.runs, rest)
		case "COPY":
			d.copies = append(d.copies, rest)
		}
	}
	if len(d.stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return d, nil
}

var argRef = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

func expandArgs(s string, args map[string]string) string {
	return argRef.ReplaceAllStringFunc(s, func(m string) string {
		return args[argRef.FindStringSubmatch(m)[1]]
	})
}

// binaryPath is where the image keeps keygate: its ENTRYPOINT.
func (d *dockerfile) binaryPath() string {
	if len(d.entrypoint) == 0 {
		return ""
	}
	return d.entrypoint[0]
}

func TestDockerfile(t *testing.T) {
	d := loadDockerfile(t)
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, "deploy/Dockerfile: "+fmt.Sprintf(format, args...))
	}

	// The builder's Go is the one go.mod asks for.
	mod, _ := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(mod))
	builder := d.stages[0].image
	if goLine == nil || builder != "golang:"+goLine[1] {
		add("the builder is %q, want golang:%s (go.mod's go line)", builder, goLine[1])
	}
	final := d.stages[len(d.stages)-1].image
	if !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		add("the final image is %q, want gcr.io/distroless/static… or scratch", final)
	}

	// A static, reproducible, version-stamped build of ./cmd/keygate.
	var build, out string
	for _, r := range d.runs {
		if strings.Contains(r, "go build") {
			build = r
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=$VERSION", "./cmd/keygate"} {
		if !strings.Contains(build, want) {
			add("the go build line lacks %q: %s", want, build)
		}
	}
	if m := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(build); m != nil {
		out = m[1]
	} else {
		add("the go build line has no -o OUTPUT")
	}

	// The binary is copied from the builder to ENTRYPOINT's path.
	bin := d.binaryPath()
	copied := false
	for _, c := range d.copies {
		f := strings.Fields(c)
		if len(f) >= 2 && strings.HasPrefix(c, "--from=") && f[len(f)-2] == out && f[len(f)-1] == bin {
			copied = true
		}
	}
	if bin == "" || !copied {
		add("ENTRYPOINT %q is not where the builder's %q is copied", d.entrypoint, out)
	}
	if len(d.entrypoint) != 1 {
		add("ENTRYPOINT %q: want the binary alone, so that CMD, compose's command and Kubernetes' args give the subcommand", d.entrypoint)
	}
	if len(d.cmd) == 0 {
		add("no CMD: the image would print the usage and exit 2")
	} else {
		inv := &invocation{where: "deploy/Dockerfile CMD", cmd: d.cmd[0], args: d.cmd[1:]}
		problems = append(problems, inv.problems()...)
	}

	// Not root.
	u := strings.Split(d.user, ":")[0]
	if u == "" || u == "root" || u == "0" {
		add("USER %q: the final stage must not run as root", d.user)
	}

	// EXPOSE: exactly the binary's default ports.
	want := map[string]bool{}
	for _, lf := range [][2]string{{"serve", "listen"}, {"sidecar", "listen"}, {"sidecar", "ops-listen"}} {
		_, p, err := splitHostPort(commands[lf[0]].flags[lf[1]].def)
		if err != nil {
			add("keygate %s --%s default %q: %v", lf[0], lf[1], commands[lf[0]].flags[lf[1]].def, err)
			continue
		}
		want[strconv.Itoa(p)] = true
	}
	got := map[string]bool{}
	for _, e := range d.expose {
		got[strings.TrimSuffix(e, "/tcp")] = true
	}
	for p := range want {
		if !got[p] {
			add("EXPOSE lacks %s, a default port of the binary", p)
		}
	}
	for p := range got {
		if !want[p] {
			add("EXPOSE %s: no listener of the binary defaults to it", p)
		}
	}

	// ENV: the image runs serve and sidecar alike.
	for k := range d.env {
		if !strings.HasPrefix(k, "KEYGATE_") {
			continue
		}
		for _, c := range []string{"serve", "sidecar"} {
			if _, ok := commands[c].byEnv[k]; !ok {
				add("ENV %s is not read by keygate %s", k, c)
			}
		}
	}
	if dir := d.env["KEYGATE_DATA_DIR"]; dir != "" {
		owned := false
		for _, c := range d.copies {
			if m := regexp.MustCompile(`--chown=([^:\s]+)`).FindStringSubmatch(c); m != nil && m[1] == u && strings.HasSuffix(c, " "+dir) {
				owned = true
			}
		}
		if !owned {
			add("KEYGATE_DATA_DIR=%s is not created owned by the image's user: the embedded store could not write it", dir)
		}
	}

	// No shell in distroless: a HEALTHCHECK can only run the binary itself.
	for _, ins := range d.other {
		if strings.HasPrefix(ins, "HEALTHCHECK ") && !strings.Contains(ins, "NONE") {
			if !strings.Contains(ins, `["`+bin) {
				add("%s: the image has no shell or curl; only %s can run", ins, bin)
			}
		}
	}
	report(t, problems)
}

// TestDockerignore checks that the build context keeps every package the
// binary is built from.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Logf("no .dockerignore (%v): the whole repository is the build context", err)
		return
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "!") {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "./cmd/keygate")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(out)) {
		rel, _ := filepath.Rel(repoRoot, dir)
		needed = append(needed, filepath.ToSlash(rel))
	}
	for _, n := range needed {
		// A path is excluded when it or one of its parents matches.
		parts := strings.Split(n, "/")
		for i := 1; i <= len(parts); i++ {
			p := strings.Join(parts[:i], "/")
			for _, pat := range patterns {
				pat = strings.TrimPrefix(pat, "**/")
				if ok, _ := filepath.Match(pat, p); ok {
					t.Errorf(".dockerignore pattern %q leaves %s out of the build context; go build ./cmd/keygate needs it", pat, n)
				}
			}
		}
	}
}
