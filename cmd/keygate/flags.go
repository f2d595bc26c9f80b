package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// flagSet is a flag.FlagSet whose every flag also reads KEYGATE_<FLAG> from
// the environment (--redis-url ↔ KEYGATE_REDIS_URL). A flag given on the
// command line wins over the environment.
type flagSet struct {
	*flag.FlagSet
	name string
	// envOnly, when set, limits the environment to these flags: the keys
	// commands read KEYGATE_URL and KEYGATE_ADMIN_TOKEN, but a stray
	// KEYGATE_DESCRIPTION must not change what "keys update" writes.
	envOnly map[string]bool
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), name: name}
	fs.SetOutput(stderr)
	fs.Usage = func() {
		stderr := fs.Output()
		fmt.Fprintf(stderr, "Usage: %s\n\n%s\nFlags (a flag shown with a KEYGATE_ variable also reads it from the environment):\n", name, synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" && f.DefValue != "[]" {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			env := ""
			if fs.envOnly == nil || fs.envOnly[f.Name] {
				env = "  " + envName(f.Name)
			}
			fmt.Fprintf(stderr, "  --%s%s\n      %s%s\n", f.Name, env, f.Usage, def)
		})
	}
	return fs
}

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "KEYGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// errHelp reports that --help was asked for; the usage is already printed.
var errHelp = flag.ErrHelp

// parse parses args, then fills every flag not given on the command line from
// its environment variable. The error is one line naming the flag.
func (fs *flagSet) parse(args []string, getenv func(string) string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard) // the flag package would print the usage after every error
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return errHelp
	}
	if err != nil {
		return fmt.Errorf("%s: %v (see --help)", fs.name, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil || (fs.envOnly != nil && !fs.envOnly[f.Name]) {
			return
		}
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		if r, ok := f.Value.(interface{ setFromEnv(string) error }); ok {
			if e := r.setFromEnv(v); e != nil {
				err = fmt.Errorf("%s: %s (--%s): %v", fs.name, envName(f.Name), f.Name, e)
			}
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s: %s (--%s): invalid value %q: %v", fs.name, envName(f.Name), f.Name, v, e)
		}
	})
	return err
}

// listFlag is a repeatable flag. In the environment its values are
// separated by ";" (values may hold commas).
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ";") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func (l *listFlag) setFromEnv(v string) error {
	for _, part := range strings.Split(v, ";") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// usageError is a bad flag or configuration: one line, exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}
