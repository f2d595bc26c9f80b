package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: section → key → values, in order.
type unit struct {
	file     string
	sections map[string]map[string][]string
}

func (u *unit) get(section, key string) string {
	v := u.sections[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func parseUnit(file, src string) (*unit, error) {
	u := &unit{file: file, sections: map[string]map[string][]string{}}
	section := ""
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(lines[i])
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u.sections[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: %q is not KEY=VALUE in a section", i+1, line)
			}
			k = strings.TrimSpace(k)
			u.sections[section][k] = append(u.sections[section][k], strings.TrimSpace(v))
		}
	}
	return u, nil
}

// envFile reads a systemd EnvironmentFile, and the KEYGATE_ names of its
// commented-out examples (a user will uncomment them: they must exist too).
func envFile(src string) (env map[string]string, commented []string) {
	env = map[string]string{}
	commentedVar := regexp.MustCompile(`^[#;]\s*(KEYGATE_[A-Z0-9_]+)=`)
	for _, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if m := commentedVar.FindStringSubmatch(line); m != nil {
			commented = append(commented, m[1])
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return env, commented
}

// systemdUnits reads every unit in deploy/systemd with the invocation its
// ExecStart and environment make.
func systemdUnits(t *testing.T) (map[*unit]*invocation, []string) {
	t.Helper()
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	paths, _ := filepath.Glob(filepath.Join(repoRoot, "deploy", "systemd", "*.service"))
	if len(paths) == 0 {
		t.Fatal("no unit in deploy/systemd")
	}
	out := map[*unit]*invocation{}
	for _, path := range paths {
		name := "systemd/" + filepath.Base(path)
		u, err := parseUnit(name, readFile(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		inv := &invocation{where: name, env: map[string]string{}}
		argv := strings.Fields(u.get("Service", "ExecStart"))
		if len(u.sections["Service"]["ExecStart"]) != 1 || len(argv) < 2 || !filepath.IsAbs(argv[0]) || filepath.Base(argv[0]) != "keygate" {
			add("%s: ExecStart %q: want one /absolute/path/keygate COMMAND [flags]", name, u.sections["Service"]["ExecStart"])
			continue
		}
		inv.cmd, inv.args = argv[1], argv[2:]
		for _, ef := range u.sections["Service"]["EnvironmentFile"] {
			base := filepath.Base(strings.TrimPrefix(ef, "-"))
			rel := "systemd/" + base
			if _, err := os.Stat(filepath.Join(repoRoot, "deploy", rel)); err != nil {
				add("%s: EnvironmentFile %s: deploy/%s, its example, is missing", name, ef, rel)
				continue
			}
			env, commented := envFile(readFile(t, rel))
			for k, v := range env {
				inv.env[k] = v
			}
			for _, k := range commented {
				if c, ok := commands[inv.cmd]; ok {
					if _, ok := c.byEnv[k]; !ok {
						add("%s: commented-out %s is not read by keygate %s", rel, k, inv.cmd)
					}
				}
			}
		}
		for _, e := range u.sections["Service"]["Environment"] {
			for _, kv := range strings.Fields(e) {
				k, v, _ := strings.Cut(strings.Trim(kv, `"`), "=")
				inv.env[k] = v
			}
		}
		out[u] = inv
	}
	return out, problems
}

func TestSystemd(t *testing.T) {
	units, problems := systemdUnits(t)
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var invs []*invocation
	for u, inv := range units {
		invs = append(invs, inv)
		problems = append(problems, inv.problems()...)
		svc := u.sections["Service"]
		want := map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"}
		for k, v := range want {
			if u.get("Service", k) != v {
				add("%s: %s=%s is missing", u.file, k, v)
			}
		}
		if u.get("Service", "DynamicUser") != "yes" && (u.get("Service", "User") == "" || u.get("Service", "User") == "root") {
			add("%s: runs as root: set DynamicUser=yes or User=keygate", u.file)
		}
		if _, ok := svc["CapabilityBoundingSet"]; !ok {
			add("%s: no CapabilityBoundingSet", u.file)
		}
		if s := u.get("Service", "KillSignal"); s != "" && s != "SIGTERM" {
			add("%s: KillSignal=%s: keygate drains on SIGTERM", u.file, s)
		}
		if d, err := systemdDuration(u.get("Service", "TimeoutStopSec")); err != nil || d <= drainSeconds*time.Second {
			add("%s: TimeoutStopSec=%q must exceed keygate's %d s drain", u.file, u.get("Service", "TimeoutStopSec"), drainSeconds)
		}
		if u.get("Install", "WantedBy") == "" {
			add("%s: no [Install] WantedBy", u.file)
		}
		// ProtectSystem=strict leaves only the StateDirectory writable: the
		// embedded store's directory must be in it.
		if inv.cmd == "serve" {
			dir := inv.value("data-dir")
			if !filepath.IsAbs(dir) {
				dir = filepath.Join(u.get("Service", "WorkingDirectory"), dir)
			}
			state := u.get("Service", "StateDirectory")
			if state == "" || !strings.HasPrefix(filepath.Clean(dir)+"/", "/var/lib/"+state+"/") {
				add("%s: --data-dir is %s, outside StateDirectory=%s (/var/lib/%s): the embedded store could not write under ProtectSystem=strict", u.file, dir, state, state)
			}
		}
		problems = append(problems, systemdAnalyze(t, u, inv)...)
	}
	problems = append(problems, shared(invs)...)
	report(t, problems)
}

// systemdDuration reads a systemd time span: "30s", "1min", "90".
func systemdDuration(s string) (time.Duration, error) {
	if s == "" {
		return 90 * time.Second, nil // DefaultTimeoutStopSec
	}
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(strings.ReplaceAll(strings.ReplaceAll(s, "min", "m"), " ", ""))
}

// systemdAnalyze runs "systemd-analyze verify" on the unit, pointed at the
// test binary and the example env file, when the tool is installed: it
// knows every directive, so it catches a misspelt or invalid one.
func systemdAnalyze(t *testing.T, u *unit, inv *invocation) []string {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("%s: systemd-analyze not installed; unit directives not verified", u.file)
		return nil
	}
	src := readFile(t, u.file)
	exec0 := strings.Fields(u.get("Service", "ExecStart"))[0]
	src = strings.ReplaceAll(src, "ExecStart="+exec0, "ExecStart="+keygate)
	for _, ef := range u.sections["Service"]["EnvironmentFile"] {
		src = strings.ReplaceAll(src, "EnvironmentFile="+ef, "EnvironmentFile="+filepath.Join(repoRoot, "deploy", "systemd", filepath.Base(ef)))
	}
	path := filepath.Join(t.TempDir(), filepath.Base(u.file))
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(tool, "verify", "--man=no", path).CombinedOutput()
	var problems []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, path) {
			problems = append(problems, u.file+": systemd-analyze verify: "+strings.ReplaceAll(line, path, u.file))
		}
	}
	return problems
}

// TestSystemdRuns runs both units' invocations: health endpoints where the
// env files put them, and the README session through serve and sidecar.
func TestSystemdRuns(t *testing.T) {
	units, problems := systemdUnits(t)
	report(t, problems)
	var invs []*invocation
	for _, inv := range units {
		invs = append(invs, inv)
		port := inv.port(inv.healthFlag())
		checkProbes(t, inv, []probe{
			{inv.where, "liveness", "/healthz", port},
			{inv.where, "readiness", "/readyz", port},
			{inv.where, "metrics", "/metrics", port},
		})
	}
	serve, sidecar, _, _ := session(t, mustOne(t, invs, "serve"), mustOne(t, invs, "sidecar"))
	sidecar.stop(t)
	serve.stop(t)
}
