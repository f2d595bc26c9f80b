package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keygate/keygate/internal/storedump"
)

const storeSynopsis = `keygate store export [--out FILE] [flags]
keygate store import [--in FILE] [--overwrite] [flags]
keygate store migrate [flags]

Copies keygate's data (every key, revocation, last-used time and index)
between stores, through a file of JSON lines: export reads the store that
the flags name (Redis, or with none configured the embedded store in
--data-dir, which must not be in use: stop keygate serve first), import
writes into the store they name. To move from the embedded store to Redis:

  keygate store export --out keygate.dump
  keygate store import --in keygate.dump --redis-url redis://redis.internal:6379

The dump holds the keys' digests, never their secrets; keep it private, and
give the new store the same KEYGATE_HASH_KEY and KEYGATE_NAMESPACE. Import
refuses a target that already holds any key of the dump, unless --overwrite.

Migrate moves the listing indexes of an earlier keygate version to the
current layout, and prints how many keys it moved. It is idempotent and safe
to run while serve instances run, and in several places at once: one
migrates, the others wait for it. keygate serve runs it at start, in the
background; run it yourself before upgrading a large store (listing answers
503 until the migration is done), and once more after the last instance of
the earlier version has stopped, for the keys it created meanwhile.`

func storeCmd(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) > 0 && args[0] == "migrate" {
		return storeMigrate(args, stdout, stderr, getenv)
	}
	if len(args) == 0 || (args[0] != "export" && args[0] != "import") {
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stdout, storeSynopsis)
			return exitOK
		}
		fmt.Fprintf(stderr, "Usage: %s\n", storeSynopsis)
		return exitUsage
	}
	name := "keygate store " + args[0]
	fs := newFlagSet(name, storeSynopsis, stderr)
	var cfg storeConfig
	cfg.registerConnection(fs)
	// Only the connection flags read the environment: a stray
	// KEYGATE_OVERWRITE must not decide what import replaces.
	fs.envOnly = map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { fs.envOnly[f.Name] = true })
	var file *string
	overwrite := new(bool)
	if args[0] == "export" {
		file = fs.String("out", "-", "file to write the dump to (mode 0600); - is standard output")
	} else {
		file = fs.String("in", "-", "file to read the dump from; - is standard input")
		overwrite = fs.Bool("overwrite", false, "replace the keys of the dump that the target already holds")
	}
	if err := fs.parse(args[1:], getenv); err != nil {
		if errors.Is(err, errHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return exitUsage
	}
	if err := cfg.checkConnection(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	logger := cfg.logger(stderr)
	rdb, e, err := cfg.connect(logger, true)
	if err != nil {
		return startError(stderr, name, err)
	}
	defer func() {
		if e != nil {
			e.Close()
		} else {
			rdb.Close()
		}
	}()
	source := "the embedded store in " + cfg.dataDir
	if e == nil {
		source = "Redis"
	}
	opts := storedump.Options{Namespace: cfg.namespace, Ephemeral: cfg.ephemeral, Overwrite: *overwrite}
	ctx := context.Background()

	if args[0] == "export" {
		out := stdout
		if *file != "-" {
			f, err := os.OpenFile(*file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				fmt.Fprintf(stderr, "%s: --out: %v\n", name, err)
				return exitUsage
			}
			defer f.Close()
			out = f
		}
		n, err := storedump.Export(ctx, rdb, out, opts)
		if err == nil && *file != "-" {
			err = out.(*os.File).Sync()
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return exitUnreachable
		}
		fmt.Fprintf(stderr, "exported %d keys of namespace %q from %s\n", n, cfg.namespace, source)
		return exitOK
	}

	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			fmt.Fprintf(stderr, "%s: --in: %v\n", name, err)
			return exitUsage
		}
		defer f.Close()
		in = f
	}
	n, err := storedump.Import(ctx, rdb, in, opts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		switch {
		case errors.Is(err, storedump.ErrExists):
			return exitRefused
		case errors.Is(err, storedump.ErrBadDump):
			return exitUsage
		}
		return exitUnreachable
	}
	fmt.Fprintf(stderr, "imported %d keys of namespace %q into %s\n", n, cfg.namespace, source)
	return exitOK
}

// storeMigrate is keygate store migrate.
func storeMigrate(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("keygate store migrate", storeSynopsis, stderr)
	var cfg storeConfig
	cfg.register(fs)
	if code, ok := parseFlags(fs, args[1:], getenv, &cfg, stderr); !ok {
		return code
	}
	logger := cfg.logger(stderr)
	b, err := cfg.open(logger, true)
	if err != nil {
		return startError(stderr, "keygate store migrate", err)
	}
	defer b.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	start := time.Now()
	n, err := b.store.Migrate(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "keygate store migrate: %v\n", err)
		return exitUnreachable
	}
	fmt.Fprintf(stdout, "moved %d keys to the current listing indexes in %s\n", n, time.Since(start).Round(time.Millisecond))
	return exitOK
}

// migrateInBackground runs the store's migration until it succeeds or ctx
// ends, retrying every retry: keys verify and change meanwhile, and
// listing answers 503 until it is done.
func migrateInBackground(ctx context.Context, b *backend, logger *slog.Logger, retry time.Duration) {
	go func() {
		for {
			n, err := b.store.Migrate(ctx)
			if err == nil {
				if n > 0 {
					logger.Info("moved the keys of the earlier listing indexes", "keys", n)
				}
				return
			}
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return
			}
			logger.Error("migrating the listing indexes; listing answers 503 until it is done", "retry_in", retry, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}()
}
