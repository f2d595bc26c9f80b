package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestBadConsoleOrigin: a console origin that is not scheme://host stops
// serve with one line that names the flag.
func TestBadConsoleOrigin(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
	}{
		{"flag without a scheme", []string{"--console-origin", "keys.example.com"}, env()},
		{"flag with a path", []string{"--console-origin", "https://keys.example.com/console"}, env()},
		{"env of another scheme", nil, env("KEYGATE_CONSOLE_ORIGIN", "ftp://keys.example.com")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}, tc.args...)
			var stdout, stderr bytes.Buffer
			code := run(args, strings.NewReader(""), &stdout, &stderr, tc.env)
			if code != exitUsage {
				t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], "--console-origin (KEYGATE_CONSOLE_ORIGIN)") {
				t.Fatalf("stderr %q: want one line naming --console-origin", stderr.String())
			}
		})
	}
}
