package main

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var envVar = regexp.MustCompile(`KEYGATE_[A-Z0-9_]+`)

// helpEnv returns the environment variables that "keygate args… --help"
// says its flags read.
func helpEnv(t *testing.T, args ...string) []string {
	t.Helper()
	var out bytes.Buffer
	if code := run(append(args, "--help"), strings.NewReader(""), &out, &out, env()); code != exitOK {
		t.Fatalf("keygate %v --help: exit %d\n%s", args, code, out.String())
	}
	return envVar.FindAllString(out.String(), -1)
}

// readmeConfigTable returns the variables named in the README's
// configuration table.
func readmeConfigTable(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var vars []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `KEYGATE_") {
			cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
			vars = append(vars, envVar.FindAllString(cell, -1)...)
		}
	}
	return vars
}

// TestReadmeConfigurationTable checks the README's configuration table
// against the flags the binary really has: every variable serve and
// sidecar read is in the table, and every variable in the table is read by
// some command.
func TestReadmeConfigurationTable(t *testing.T) {
	table := readmeConfigTable(t)
	real := map[string]bool{}
	for _, cmd := range [][]string{{"serve"}, {"sidecar"}, {"keys", "list"}} {
		for _, v := range helpEnv(t, cmd...) {
			real[v] = true
			if cmd[0] != "keys" && !slices.Contains(table, v) {
				t.Errorf("keygate %s reads %s, which README.md's configuration table does not list", cmd[0], v)
			}
		}
	}
	for _, v := range table {
		if !real[v] {
			t.Errorf("README.md's configuration table lists %s, which no command reads", v)
		}
	}
}

// TestKeysHelp checks that each keys command's --help lists the flags the
// keys synopsis (and the README) give it, and offers the environment only
// for the flags that read it.
func TestKeysHelp(t *testing.T) {
	for name, cmd := range keysCommands(strings.NewReader("")) {
		var out bytes.Buffer
		if code := run([]string{"keys", name, "--help"}, strings.NewReader(""), &out, &out, env()); code != exitOK {
			t.Fatalf("keys %s --help: exit %d", name, code)
		}
		help := out.String()
		var synopsis string
		for _, line := range strings.Split(keysSynopsis, "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == name {
				synopsis = line
			}
		}
		if synopsis == "" {
			t.Errorf("keys %s is missing from the keys synopsis", name)
		}
		for _, flagName := range regexp.MustCompile(`--[a-z-]+`).FindAllString(synopsis, -1) {
			if !strings.Contains(help, "  "+flagName) {
				t.Errorf("keys %s --help does not list %s", name, flagName)
			}
			if cmd.fs.Lookup(strings.TrimPrefix(flagName, "--")) == nil {
				t.Errorf("keys %s has no flag %s, which the synopsis gives it", name, flagName)
			}
		}
		for _, v := range envVar.FindAllString(help, -1) {
			if v != "KEYGATE_URL" && v != "KEYGATE_ADMIN_TOKEN" && v != "KEYGATE_DATA_DIR" {
				t.Errorf("keys %s --help offers %s, which it does not read", name, v)
			}
		}
	}
}
