package deploy

import (
	"cmp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	sdunit "github.com/coreos/go-systemd/v22/unit"
)

// unit is a systemd unit file as go-systemd reads it, and the keygate
// invocation its ExecStart and environment make.
type unit struct {
	file string
	opts map[string][]string // "Section.Key" → values, in order
	inv  *invocation
}

func (u *unit) get(key string) string {
	if v := u.opts[key]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
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
		} else if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, ";") {
			env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return env, commented
}

// systemdUnits reads every unit in deploy/systemd with its example env file.
func systemdUnits(t *testing.T) ([]*unit, problems) {
	t.Helper()
	var units []*unit
	var ps problems
	paths, _ := filepath.Glob(filepath.Join(repoRoot, "deploy", "systemd", "*.service"))
	for _, path := range paths {
		name := "systemd/" + filepath.Base(path)
		opts, err := sdunit.DeserializeOptions(strings.NewReader(readFile(t, name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		u := &unit{file: name, opts: map[string][]string{}, inv: &invocation{where: name, env: map[string]string{}}}
		for _, o := range opts {
			u.opts[o.Section+"."+o.Name] = append(u.opts[o.Section+"."+o.Name], o.Value)
		}
		argv := strings.Fields(u.get("Service.ExecStart"))
		if len(u.opts["Service.ExecStart"]) != 1 || len(argv) < 2 || !filepath.IsAbs(argv[0]) || filepath.Base(argv[0]) != "keygate" {
			ps.add("%s: ExecStart %q: want one /absolute/path/keygate COMMAND [flags]", name, u.opts["Service.ExecStart"])
			continue
		}
		u.inv.cmd, u.inv.args = argv[1], argv[2:]
		for _, ef := range u.opts["Service.EnvironmentFile"] {
			rel := "systemd/" + filepath.Base(strings.TrimPrefix(ef, "-"))
			if _, err := os.Stat(filepath.Join(repoRoot, "deploy", rel)); err != nil {
				ps.add("%s: EnvironmentFile %s: deploy/%s, its example, is missing", name, ef, rel)
				continue
			}
			env, commented := envFile(readFile(t, rel))
			for k, v := range env {
				u.inv.env[k] = v
			}
			for _, k := range commented {
				if _, ok := commands[u.inv.cmd].byEnv[k]; commands[u.inv.cmd] != nil && !ok {
					ps.add("%s: commented-out %s is not read by keygate %s", rel, k, u.inv.cmd)
				}
			}
		}
		for _, e := range u.opts["Service.Environment"] {
			for _, kv := range strings.Fields(e) {
				k, v, _ := strings.Cut(strings.Trim(kv, `"`), "=")
				u.inv.env[k] = v
			}
		}
		units = append(units, u)
	}
	if len(paths) == 0 {
		t.Fatal("no unit in deploy/systemd")
	}
	return units, ps
}

func TestSystemd(t *testing.T) {
	units, ps := systemdUnits(t)
	var invs []*invocation
	for _, u := range units {
		invs = append(invs, u.inv)
		ps = append(ps, u.inv.problems()...)
		for k, v := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes"} {
			if u.get("Service."+k) != v {
				ps.add("%s: %s=%s is missing", u.file, k, v)
			}
		}
		if user := u.get("Service.User"); u.get("Service.DynamicUser") != "yes" && (user == "" || user == "root") {
			ps.add("%s: runs as root: set DynamicUser=yes or User=keygate", u.file)
		}
		if _, ok := u.opts["Service.CapabilityBoundingSet"]; !ok {
			ps.add("%s: no CapabilityBoundingSet", u.file)
		}
		if s := u.get("Service.KillSignal"); s != "" && s != "SIGTERM" {
			ps.add("%s: KillSignal=%s: keygate drains on SIGTERM", u.file, s)
		}
		if d, err := systemdDuration(u.get("Service.TimeoutStopSec")); err != nil || d <= drainSeconds*time.Second {
			ps.add("%s: TimeoutStopSec=%q must exceed keygate's %d s drain", u.file, u.get("Service.TimeoutStopSec"), drainSeconds)
		}
		if u.get("Install.WantedBy") == "" {
			ps.add("%s: no [Install] WantedBy", u.file)
		}
		// ProtectSystem=strict leaves only the StateDirectory writable: the
		// embedded store's directory must be in it.
		if dir, state := u.inv.value("data-dir"), u.get("Service.StateDirectory"); u.inv.cmd == "serve" {
			if !filepath.IsAbs(dir) {
				dir = filepath.Join(u.get("Service.WorkingDirectory"), dir)
			}
			if state == "" || !strings.HasPrefix(filepath.Clean(dir)+"/", "/var/lib/"+state+"/") {
				ps.add("%s: --data-dir is %s, outside StateDirectory=%s: the embedded store could not write under ProtectSystem=strict", u.file, dir, state)
			}
		}
		ps = append(ps, systemdAnalyze(t, u)...)
	}
	report(t, append(ps, shared(invs)...))
}

// systemdDuration reads a systemd time span: "30s", "1min", "90" (seconds).
func systemdDuration(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(cmp.Or(s, "90")); err == nil { // 90 s: DefaultTimeoutStopSec
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(strings.ReplaceAll(strings.ReplaceAll(s, "min", "m"), " ", ""))
}

// systemdAnalyze runs "systemd-analyze verify" on the unit, pointed at the
// test binary and the example env file, when the tool is installed: it
// knows every directive, so it catches a misspelt or invalid one.
func systemdAnalyze(t *testing.T, u *unit) problems {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("%s: systemd-analyze not installed; unit directives not verified", u.file)
		return nil
	}
	src := strings.ReplaceAll(readFile(t, u.file), "ExecStart="+strings.Fields(u.get("Service.ExecStart"))[0], "ExecStart="+keygate)
	for _, ef := range u.opts["Service.EnvironmentFile"] {
		src = strings.ReplaceAll(src, "EnvironmentFile="+ef, "EnvironmentFile="+filepath.Join(repoRoot, "deploy", "systemd", filepath.Base(ef)))
	}
	path := filepath.Join(t.TempDir(), filepath.Base(u.file))
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(tool, "verify", "--man=no", path).CombinedOutput()
	var ps problems
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, path) {
			ps.add("%s: systemd-analyze verify: %s", u.file, strings.ReplaceAll(line, path, u.file))
		}
	}
	return ps
}

// TestSystemdRuns runs both units' invocations: health endpoints where the
// env files put them, and the README session through serve and sidecar.
func TestSystemdRuns(t *testing.T) {
	units, ps := systemdUnits(t)
	report(t, ps)
	var invs []*invocation
	for _, u := range units {
		invs = append(invs, u.inv)
		checkProbes(t, u.inv, healthProbes(u.inv))
	}
	serve, sidecar := session(t, mustOne(t, invs, "serve"), mustOne(t, invs, "sidecar"))
	sidecar.stop(t)
	serve.stop(t)
}
