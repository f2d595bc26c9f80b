package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"
)

const storeSynopsis = `keygate store migrate [flags]

Moves the listing indexes of an earlier keygate version to the current
layout, and prints how many keys it moved. It is idempotent and safe to run
while serve instances run, and in several places at once: one migrates, the
others wait for it. keygate serve runs it at start, in the background; run
it yourself before upgrading a large store (listing answers 503 until the
migration is done), and once more after the last instance of the earlier
version has stopped, for the keys it created meanwhile.`

func storeCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || args[0] != "migrate" {
		if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(stdout, storeSynopsis)
			return exitOK
		}
		fmt.Fprintf(stderr, "Usage: %s\n", storeSynopsis)
		return exitUsage
	}
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
