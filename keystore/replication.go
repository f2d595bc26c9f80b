package keystore

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// What keeps the store right across replication and failovers (Sentinel,
// Cluster); README.md, "Redis Cluster and Sentinel", has the measurements.
//
//   - With [Options.ReplicaWait], Revoke, Update and Delete run their script
//     and then WAIT 1 on the same connection to the key's master, so that
//     they return once a replica holds the change, and a promotion of that
//     replica cannot undo it.
//   - On Redis Cluster, a failed command makes the client reload the slot
//     map. go-redis reloads it by itself only on MOVED, which a dead master
//     never sends, or once a minute: without this a killed master's slots
//     would stay unavailable for up to a minute after its replica took
//     over.

// opReplicaWait labels, in keygate_store_errors_total, a change that no
// replica confirmed within Options.ReplicaWait.
const opReplicaWait = "replica_wait"

// writer is what Revoke, Update and Delete run their scripts on.
func (s *Store) writer() redis.Scripter {
	if s.opts.ReplicaWait <= 0 {
		return s.rdb
	}
	return replicatedWriter{s}
}

// replicatedWriter runs each script on one connection to the master of its
// key, followed by WAIT 1 on that connection: WAIT counts the replicas that
// acknowledged the connection's own writes. Scripts that only read go to
// the client as they are.
type replicatedWriter struct{ s *Store }

func (w replicatedWriter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return w.run(ctx, keys, func(c redis.Scripter) *redis.Cmd { return c.Eval(ctx, script, keys, args...) })
}

func (w replicatedWriter) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return w.run(ctx, keys, func(c redis.Scripter) *redis.Cmd { return c.EvalSha(ctx, sha1, keys, args...) })
}

func (w replicatedWriter) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return w.s.rdb.EvalRO(ctx, script, keys, args...)
}

func (w replicatedWriter) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return w.s.rdb.EvalShaRO(ctx, sha1, keys, args...)
}

func (w replicatedWriter) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return w.s.rdb.ScriptExists(ctx, hashes...)
}

func (w replicatedWriter) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return w.s.rdb.ScriptLoad(ctx, script)
}

// run runs eval on the master of keys[0] and waits for a replica.
func (w replicatedWriter) run(ctx context.Context, keys []string, eval func(redis.Scripter) *redis.Cmd) *redis.Cmd {
	switch c := w.s.rdb.(type) {
	case *redis.Client: // a single server, or the master Sentinel names
		return w.s.evalAndWait(ctx, c, keys[0], eval)
	case *redis.ClusterClient:
		var cmd *redis.Cmd
		for range 2 {
			node, err := c.MasterForKey(ctx, keys[0])
			if err != nil {
				cmd = redis.NewCmd(ctx)
				cmd.SetErr(err)
				return cmd
			}
			if cmd = w.s.evalAndWait(ctx, node, keys[0], eval); !redirected(cmd.Err()) {
				return cmd
			}
			// The slot moved (a failover, a resharding): learn where to.
			c.ReloadState(ctx)
			time.Sleep(redirectPause)
		}
		// Still moving: let the cluster client follow the redirection,
		// without waiting for a replica.
		cmd = eval(c)
		if cmd.Err() == nil {
			w.s.unreplicated(keys[0], 0, errors.New("the key's slot was moving"))
		}
		return cmd
	default: // a Ring: no one master to wait on
		return eval(w.s.rdb)
	}
}

// redirectPause lets a lazy reload of the slot map finish before a retry.
const redirectPause = 100 * time.Millisecond

// evalAndWait runs eval and WAIT 1 on one connection of c. A change that no
// replica confirms in time is still made, and the call succeeds: it is in
// effect on the master, and without a replica in sync a failover has none
// to promote; the store logs it and counts it.
func (s *Store) evalAndWait(ctx context.Context, c *redis.Client, key string, eval func(redis.Scripter) *redis.Cmd) *redis.Cmd {
	conn := c.Conn()
	defer conn.Close()
	cmd := eval(conn)
	if cmd.Err() != nil {
		return cmd // nothing changed, or the caller reports what is unknown
	}
	wait := max(s.opts.ReplicaWait, time.Millisecond) // WAIT 1 0 would block for ever
	n, err := conn.Wait(ctx, 1, wait).Result()
	if err != nil || n < 1 {
		s.unreplicated(key, wait, err)
	}
	return cmd
}

func (s *Store) unreplicated(key string, waited time.Duration, err error) {
	s.metrics.errors.WithLabelValues(opReplicaWait).Inc()
	args := []any{"id", strings.TrimPrefix(key, s.names.record("")), "waited", waited}
	if err != nil {
		args = append(args, "err", err)
	}
	s.opts.Logger.Warn("no replica confirmed a change: a failover now could undo it", args...)
}

// redirected reports a Cluster error that a fresh slot map may cure.
func redirected(err error) bool {
	for _, prefix := range []string{"MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	return false
}

// refreshTopology makes a Cluster client reload its slot map after err, so
// that the store follows a failover as soon as the cluster has promoted a
// replica. go-redis coalesces the reloads and spaces them by 200ms.
func (s *Store) refreshTopology(err error) {
	if c, ok := s.rdb.(*redis.ClusterClient); ok && storeFault(err) {
		c.ReloadState(context.Background())
	}
}

// storeFault reports whether err says something about Redis: not a
// missing key, and not a caller that went away.
func storeFault(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, context.Canceled)
}
