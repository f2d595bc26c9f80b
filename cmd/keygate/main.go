// Command keygate serves the admin API, forward-auth and the sidecar proxy,
// and manages keys from a terminal. Run "keygate help" for the commands.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `keygate: self-hosted API keys on Redis.

Usage:
  keygate serve     admin API, /api_keys/verify, /forward-auth, /metrics, /healthz, /readyz
  keygate sidecar   reverse proxy that verifies every request before the upstream sees it
  keygate keys      create|list|get|update|revoke|delete|verify|usage keys against a running serve
  keygate store     export|import the data, e.g. from the embedded store to Redis;
                    migrate: move the listing indexes of an earlier version (serve does it at start)
  keygate audit     list audit events: who changed which key, and how
  keygate version   version and build info

Every flag has an environment variable: --redis-url is KEYGATE_REDIS_URL, and so on.
Run "keygate COMMAND --help" for a command's flags.
`

// Exit statuses of every command.
const (
	exitOK          = 0
	exitRefused     = 1 // a refused request or an invalid key
	exitUsage       = 2 // bad flags or configuration
	exitUnreachable = 3 // the server (or Redis) could not be reached or answered 5xx
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr, getenv)
	case "sidecar":
		return sidecarCmd(args[1:], stdout, stderr, getenv)
	case "keys":
		return keys(args[1:], stdin, stdout, stderr, getenv)
	case "store":
		return storeCmd(args[1:], stdin, stdout, stderr, getenv)
	case "audit":
		return auditCmd(args[1:], stdout, stderr, getenv)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "keygate: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}
