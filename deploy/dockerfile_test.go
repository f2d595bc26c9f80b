package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// dockerfile is deploy/Dockerfile as BuildKit reads it.
type dockerfile struct {
	stages     []instructions.Stage
	args       []string // ARG defaults before the first FROM, as NAME=VALUE
	warnings   []string // the parser's and BuildKit's linter's
	entrypoint []string // the final stage's, exec form
	cmd        []string
	shellForm  bool // ENTRYPOINT or CMD in shell form
}

var loadDockerfile = sync.OnceValues(func() (*dockerfile, error) {
	f, err := os.Open(filepath.Join(repoRoot, "deploy", "Dockerfile"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return nil, err
	}
	d := &dockerfile{}
	for _, w := range res.Warnings {
		d.warnings = append(d.warnings, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, _ []parser.Range) {
		d.warnings = append(d.warnings, rule+": "+msg)
	}})
	stages, meta, err := instructions.Parse(res.AST, lint)
	if err != nil || len(stages) == 0 {
		return nil, fmt.Errorf("no stage (%v)", err)
	}
	d.stages = stages
	for _, a := range meta {
		for _, kv := range a.Args {
			d.args = append(d.args, kv.Key+"="+kv.ValueString())
		}
	}
	for _, c := range d.final().Commands {
		switch c := c.(type) {
		case *instructions.EntrypointCommand:
			d.entrypoint, d.shellForm = c.CmdLine, d.shellForm || c.PrependShell
		case *instructions.CmdCommand:
			d.cmd, d.shellForm = c.CmdLine, d.shellForm || c.PrependShell
		}
	}
	return d, nil
})

func mustDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	d, err := loadDockerfile()
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}
	return d
}

// commandsOf are the instructions of type T in a stage.
func commandsOf[T instructions.Command](s instructions.Stage) []T {
	var out []T
	for _, c := range s.Commands {
		if x, ok := c.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

func (d *dockerfile) final() instructions.Stage { return d.stages[len(d.stages)-1] }

// base is a stage's image with the ARGs before FROM expanded.
func (d *dockerfile) base(s instructions.Stage) string {
	img, _, _ := shell.NewLex('\\').ProcessWord(s.BaseName, shell.EnvsFromSlice(d.args))
	return img
}

// binaryPath is where the image keeps keygate: its ENTRYPOINT.
func (d *dockerfile) binaryPath() string {
	return strings.Join(d.entrypoint[:min(1, len(d.entrypoint))], "")
}

func TestDockerfile(t *testing.T) {
	d := mustDockerfile(t)
	var ps problems
	add := func(format string, args ...any) { ps.add("deploy/Dockerfile: "+format, args...) }
	for _, w := range d.warnings {
		add("%s", w)
	}

	// The builder's Go is the one go.mod asks for.
	mod, _ := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(string(mod))
	if goLine == nil || d.base(d.stages[0]) != "golang:"+goLine[1] {
		add("the builder is %q, want golang:<go.mod's go version> (%v)", d.base(d.stages[0]), goLine)
	}
	if final := d.base(d.final()); !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		add("the final image is %q, want gcr.io/distroless/static… or scratch", final)
	}

	// A static, reproducible, version-stamped build of ./cmd/keygate, copied
	// from the builder to ENTRYPOINT's path; CMD is the subcommand.
	var build string
	for _, s := range d.stages {
		for _, r := range commandsOf[*instructions.RunCommand](s) {
			if line := strings.Join(r.CmdLine, " "); strings.Contains(line, "go build") {
				build = line
			}
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=$VERSION", "./cmd/keygate"} {
		if !strings.Contains(build, want) {
			add("the go build line lacks %q: %s", want, build)
		}
	}
	out := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(build)
	if out == nil || !slices.ContainsFunc(commandsOf[*instructions.CopyCommand](d.final()), func(c *instructions.CopyCommand) bool {
		return c.From != "" && slices.Contains(c.SourcePaths, out[1]) && c.DestPath == d.binaryPath()
	}) {
		add("ENTRYPOINT %q is not where the builder's go build -o copies to", d.entrypoint)
	}
	if len(d.entrypoint) != 1 || len(d.cmd) == 0 || d.shellForm {
		add("ENTRYPOINT %q CMD %q: want the binary, then the subcommand, in exec form: CMD, compose's command and Kubernetes' args give the subcommand, and there is no shell", d.entrypoint, d.cmd)
	} else {
		ps = append(ps, (&invocation{where: "deploy/Dockerfile CMD", cmd: d.cmd[0], args: d.cmd[1:]}).problems()...)
	}
	user := ""
	if users := commandsOf[*instructions.UserCommand](d.final()); len(users) > 0 {
		user, _, _ = strings.Cut(users[len(users)-1].User, ":")
	}
	if user == "" || user == "root" || user == "0" {
		add("USER %q: the final stage must not run as root", user)
	}

	// EXPOSE: exactly the binary's default ports.
	var want, got []string
	for _, lf := range [][2]string{{"serve", "listen"}, {"sidecar", "listen"}, {"sidecar", "ops-listen"}} {
		_, p, _ := splitHostPort(commands[lf[0]].flags[lf[1]].def)
		want = append(want, strconv.Itoa(p))
	}
	for _, e := range commandsOf[*instructions.ExposeCommand](d.final()) {
		for _, p := range e.Ports {
			got = append(got, strings.TrimSuffix(p, "/tcp"))
		}
	}
	if slices.Sort(want); !slices.Equal(slices.Compact(want), slices.Sorted(slices.Values(got))) {
		add("EXPOSE %v, want the binary's default ports %v", got, want)
	}

	// ENV: the image runs serve and sidecar alike; the embedded store's
	// directory belongs to the image's user.
	for _, e := range commandsOf[*instructions.EnvCommand](d.final()) {
		for _, kv := range e.Env {
			for _, c := range []string{"serve", "sidecar"} {
				if _, ok := commands[c].byEnv[kv.Key]; strings.HasPrefix(kv.Key, "KEYGATE_") && !ok {
					add("ENV %s is not read by keygate %s", kv.Key, c)
				}
			}
			if kv.Key == "KEYGATE_DATA_DIR" && !slices.ContainsFunc(commandsOf[*instructions.CopyCommand](d.final()), func(c *instructions.CopyCommand) bool {
				return c.DestPath == kv.Value && strings.HasPrefix(c.Chown+":", user+":")
			}) {
				add("KEYGATE_DATA_DIR=%s is not created owned by the image's user %s: the embedded store could not write it", kv.Value, user)
			}
		}
	}
	report(t, ps)
}
