package embedded

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// persistHook makes every command that may write, sent through
// [Store.Client], durable before its caller sees the reply.
//
// Such commands run one at a time under the store's write lock, which
// keeps the log in the order they ran (capture.go). Commands that only read
// take no lock. Blocking commands (BLPOP and kin) take none either, since
// they may wait for another client's write: what they changed is read back
// and logged once they return. A pipeline that mixes a blocking command with
// writes, outside MULTI, is refused: it would hold the lock while it waits.
type persistHook struct{ s *Store }

// errBlockingPipeline refuses a pipeline that would hold the write lock
// while it blocks.
var errBlockingPipeline = errors.New("embedded store: a blocking command cannot share a pipeline with writes")

// class is how a command takes part in persistence.
type class uint8

const (
	classRead class = iota
	classWrite
	classBlocking
)

func classify(cmd redis.Cmder) class {
	name := cmd.Name()
	if readOnlyByName[name] {
		return classRead
	}
	if sp := specByName[name]; sp != nil && sp.blocking {
		return classBlocking
	}
	return classWrite
}

func (h persistHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h persistHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch classify(cmd) {
		case classRead:
			return next(ctx, cmd)
		case classBlocking:
			err := next(ctx, cmd)
			if perr := h.s.logBlocking(cmd); perr != nil {
				cmd.SetErr(perr)
				return perr
			}
			return err
		}
		return h.s.locked(ctx, next, cmd)
	}
}

func (h persistHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var writes, blocking bool
		inMulti := len(cmds) > 0 && cmds[0].Name() == "multi"
		for _, cmd := range cmds {
			switch classify(cmd) {
			case classWrite:
				writes = true
			case classBlocking:
				blocking = true
			}
		}
		switch {
		case !writes && !blocking:
			return next(ctx, cmds)
		case blocking && !inMulti:
			if writes {
				for _, cmd := range cmds {
					cmd.SetErr(errBlockingPipeline)
				}
				return errBlockingPipeline
			}
			err := next(ctx, cmds)
			for _, cmd := range cmds {
				if classify(cmd) == classBlocking {
					if perr := h.s.logBlocking(cmd); perr != nil {
						setErrs(cmds, perr)
						return perr
					}
				}
			}
			return err
		}
		h.s.writeMu.Lock()
		err := next(ctx, cmds)
		seq, perr := h.s.capture()
		h.s.writeMu.Unlock()
		if perr == nil {
			perr = h.s.wal.commit(seq)
		}
		if perr != nil {
			perr = h.s.persistError(perr)
			setErrs(cmds, perr)
			return perr
		}
		h.s.committed()
		return err
	}
}

// locked runs a command that may write under the write lock, logs what it
// changed and waits until that is on disk.
func (s *Store) locked(ctx context.Context, next redis.ProcessHook, cmd redis.Cmder) error {
	s.writeMu.Lock()
	err := next(ctx, cmd)
	seq, perr := s.capture()
	s.writeMu.Unlock()
	if perr == nil {
		perr = s.wal.commit(seq)
	}
	if perr != nil {
		perr = s.persistError(perr)
		cmd.SetErr(perr)
		return perr
	}
	s.committed()
	return err
}

// logBlocking logs the durable keys a blocking command may have changed,
// once it has returned.
func (s *Store) logBlocking(cmd redis.Cmder) error {
	sp := specByName[cmd.Name()]
	args := make([]string, 0, len(cmd.Args()))
	for _, a := range cmd.Args()[1:] {
		args = append(args, argString(a))
	}
	keys := slices.DeleteFunc(sp.keys(args), func(k string) bool { return !s.durable(k) })
	if len(keys) == 0 {
		return nil
	}
	s.writeMu.Lock()
	for _, k := range keys {
		s.dirty.mark(k, 0, nil, nil)
	}
	seq, err := s.capture()
	s.writeMu.Unlock()
	if err == nil {
		err = s.wal.commit(seq)
	}
	if err != nil {
		return s.persistError(err)
	}
	s.committed()
	return nil
}

// persistError is what a caller sees when its write could not be made
// durable: the change is in memory, not on disk. The log takes no more
// writes, so that nothing acknowledged later can depend on it.
func (s *Store) persistError(err error) error {
	s.wal.fail(err)
	s.opts.Logger.Error("embedded store: a write could not be saved; it is in memory only, and every further write is refused until keygate restarts", "data_dir", s.dir, "err", err)
	return fmt.Errorf("embedded store: saving to %s: %w", s.dir, err)
}

// argString formats a command argument as go-redis sends it.
func argString(a any) string {
	switch a := a.(type) {
	case string:
		return a
	case []byte:
		return string(a)
	}
	return fmt.Sprint(a)
}

func setErrs(cmds []redis.Cmder, err error) {
	for _, cmd := range cmds {
		cmd.SetErr(err)
	}
}
