package redistest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterInstallHint tells how to get redis-cli, which creates a Cluster.
const ClusterInstallHint = "redis-cli not found on PATH: install it (Debian: apt-get install -y redis-tools) or run make test, which installs it"

// ClusterNodeTimeout is the cluster-node-timeout of the Clusters that
// [StartCluster] starts: a killed master's replica takes over a few seconds
// after it.
const ClusterNodeTimeout = 2 * time.Second

// readyTimeout bounds every wait of this package for a topology to settle.
const readyTimeout = 30 * time.Second

// Cluster is a Redis Cluster of 3 masters and 3 replicas on loopback,
// started by [StartCluster].
type Cluster struct {
	// Nodes are the six servers in the order they were started. Which are
	// masters changes with failovers: ask [Cluster.Masters].
	Nodes []*ClusterNode
	// Client is a cluster client seeded with every node, closed at cleanup.
	Client *redis.ClusterClient

	mu        sync.Mutex
	replicaOf map[string]string // node ID → the master it last replicated, as seen
}

// ClusterNode is one redis-server of a [Cluster]. Its [Proc] kills
// (SIGKILL) and restarts it; [Proc.Pause] and [Proc.Resume] freeze it.
type ClusterNode struct {
	*Proc
	// ID is the node ID the cluster knows it by.
	ID string
}

// StartCluster starts six cluster-enabled redis-servers on free loopback
// ports (each with its bus port, port+10000, free too), joins them with
// redis-cli --cluster create into 3 masters with one replica each, and
// waits until every node reports cluster_state:ok with all 16384 slots
// served and every replica in sync. Everything is killed at cleanup.
// extraArgs are passed to every redis-server. It fails the test, with an
// install hint, when redis-server or redis-cli is missing.
func StartCluster(t testing.TB, extraArgs ...string) *Cluster {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(InstallHint)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal(ClusterInstallHint)
	}
	c := &Cluster{replicaOf: map[string]string{}}
	for range 6 {
		c.Nodes = append(c.Nodes, &ClusterNode{Proc: startClusterNode(t, bin, extraArgs)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	args := append(c.Addrs(), "--cluster-replicas", "1", "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, append([]string{"--cluster", "create"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v: %s", err, lastLines(string(out), 5))
	}
	for _, n := range c.Nodes {
		id, err := n.do(ctx, "cluster", "myid").Text()
		if err != nil {
			t.Fatalf("asking %s for its node ID: %v", n.Addr, err)
		}
		n.ID = id
	}
	if err := poll(ctx, c.settled); err != nil {
		t.Fatalf("waiting for the cluster to form: %v", err)
	}
	c.Client = c.NewClient(t)
	return c
}

// startClusterNode starts one cluster-enabled redis-server in its own
// directory, retrying on other ports if the chosen ones were taken meanwhile.
func startClusterNode(t testing.TB, bin string, extraArgs []string) *Proc {
	t.Helper()
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		port, err := clusterPort()
		if err != nil {
			t.Fatalf("finding free ports for a cluster node: %v", err)
		}
		p := &Proc{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir}
		p.args = append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log"),
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
			"--cluster-announce-ip", "127.0.0.1",
			"--repl-diskless-sync-delay", "0",
		}, extraArgs...)
		if lastErr = p.start(bin); lastErr == nil {
			t.Cleanup(p.Stop)
			return p
		}
		os.Remove(filepath.Join(dir, "nodes.conf"))
	}
	t.Fatalf("starting a cluster node: %v", lastErr)
	return nil
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{} // handed out by clusterPort in this process
)

// clusterPort returns a port that is free, with its cluster bus port
// (port+10000) free too. Both lie below the kernel's ephemeral range
// (32768 and up on Linux), so outgoing connections do not take them.
func clusterPort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		port := 10000 + rand.IntN(12000)
		if ports[port] || ports[port+10000] || !portFree(port) || !portFree(port+10000) {
			continue
		}
		ports[port], ports[port+10000] = true, true
		return port, nil
	}
	return 0, errors.New("no free port pair (port, port+10000) after 200 tries")
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// ClusterOptions are the options of the cluster clients this package
// returns: those keygate uses (one retry, 1s timeouts), on seeds.
func ClusterOptions(seeds ...string) *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs: seeds, MaxRetries: 1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
	}
}

// NewClient returns a cluster client that first dials the given seed nodes
// (every node when none is given), closed at cleanup.
func (c *Cluster) NewClient(t testing.TB, seeds ...*ClusterNode) *redis.ClusterClient {
	t.Helper()
	addrs := c.Addrs()
	if len(seeds) > 0 {
		addrs = addrs[:0]
		for _, n := range seeds {
			addrs = append(addrs, n.Addr)
		}
	}
	rdb := redis.NewClusterClient(ClusterOptions(addrs...))
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Addrs are the addresses of every node.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// MasterOf returns the node that is the master of key's slot now.
func (c *Cluster) MasterOf(ctx context.Context, key string) (*ClusterNode, error) {
	slot, err := c.Client.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("computing the slot of %q: %w", key, err)
	}
	top, err := c.topology(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if e := top[n.ID]; e.master && e.serves(int(slot)) {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no master serves slot %d of %q", slot, key)
}

// ReplicaOf returns a node that replicates master now.
func (c *Cluster) ReplicaOf(ctx context.Context, master *ClusterNode) (*ClusterNode, error) {
	top, err := c.topology(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if e := top[n.ID]; !e.master && e.masterID == master.ID {
			return n, nil
		}
	}
	return nil, fmt.Errorf("%s has no replica", master.Addr)
}

// Role asks the node for its role: "master" or "slave".
func (n *ClusterNode) Role(ctx context.Context) (string, error) {
	role, err := n.do(ctx, "role").Slice()
	if err != nil {
		return "", fmt.Errorf("asking %s for its role: %w", n.Addr, err)
	}
	if len(role) == 0 {
		return "", fmt.Errorf("%s answered ROLE with nothing", n.Addr)
	}
	s, _ := role[0].(string)
	return s, nil
}

// WaitFailover waits, a bounded time, until dead's replica has taken over
// its slots and every running node reports a healthy cluster again, and
// returns the new master.
func (c *Cluster) WaitFailover(t testing.TB, dead *ClusterNode) *ClusterNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var promoted *ClusterNode
	err := poll(ctx, func(ctx context.Context) error {
		top, err := c.topology(ctx)
		if err != nil {
			return err
		}
		if e := top[dead.ID]; e.master && len(e.slots) > 0 {
			return fmt.Errorf("%s still owns its slots", dead.Addr)
		}
		promoted = nil
		for _, n := range c.Nodes {
			if e := top[n.ID]; n != dead && e.master && e.formerReplicaOf == dead.ID {
				promoted = n
			}
		}
		if promoted == nil {
			return fmt.Errorf("no replica of %s has been promoted", dead.Addr)
		}
		return c.healthy(ctx)
	})
	if err != nil {
		t.Fatalf("waiting for the failover of %s: %v", dead.Addr, err)
	}
	return promoted
}

// WaitRejoined waits, a bounded time, until node, restarted, is a replica
// in sync and the cluster is healthy.
func (c *Cluster) WaitRejoined(t testing.TB, node *ClusterNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	err := poll(ctx, func(ctx context.Context) error {
		if role, err := node.Role(ctx); err != nil || role != "slave" {
			return fmt.Errorf("%s is not a replica yet (role %q, %v)", node.Addr, role, err)
		}
		if err := linkUp(ctx, node.Proc); err != nil {
			return err
		}
		return c.healthy(ctx)
	})
	if err != nil {
		t.Fatalf("waiting for %s to rejoin: %v", node.Addr, err)
	}
}

// settled reports, as an error, what keeps a new cluster from being ready:
// every node must be known to every other, and every replica in sync.
func (c *Cluster) settled(ctx context.Context) error {
	if err := c.healthy(ctx); err != nil {
		return err
	}
	top, err := c.topology(ctx)
	if err != nil {
		return err
	}
	masters := 0
	for _, n := range c.Nodes {
		info, err := n.do(ctx, "cluster", "info").Text()
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", n.Addr, err)
		}
		if v := infoField(info, "cluster_known_nodes"); v != "6" {
			return fmt.Errorf("%s knows %s nodes, not 6", n.Addr, v)
		}
		if top[n.ID].master {
			masters++
			continue
		}
		if err := linkUp(ctx, n.Proc); err != nil {
			return err
		}
	}
	if masters != 3 {
		return fmt.Errorf("%d masters, not 3", masters)
	}
	return nil
}

// healthy reports, as an error, a running node that does not see every
// slot served.
func (c *Cluster) healthy(ctx context.Context) error {
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		info, err := n.do(ctx, "cluster", "info").Text()
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", n.Addr, err)
		}
		for field, want := range map[string]string{
			"cluster_state": "ok", "cluster_slots_assigned": "16384", "cluster_slots_ok": "16384",
		} {
			if got := infoField(info, field); got != want {
				return fmt.Errorf("%s reports %s:%s", n.Addr, field, got)
			}
		}
	}
	return nil
}

// poll retries cond until it returns nil or ctx is done, and then returns
// cond's last error.
func poll(ctx context.Context, cond func(context.Context) error) error {
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last: %v", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nodeEntry is one line of CLUSTER NODES.
type nodeEntry struct {
	master          bool
	masterID        string // of a replica
	formerReplicaOf string // the master it last replicated, as Cluster.topology saw it
	slots           [][2]int
}

func (e nodeEntry) serves(slot int) bool {
	for _, r := range e.slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// topology reads CLUSTER NODES from the first running node that answers.
func (c *Cluster) topology(ctx context.Context) (map[string]nodeEntry, error) {
	var lastErr error
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		text, err := n.do(ctx, "cluster", "nodes").Text()
		if err != nil {
			lastErr = fmt.Errorf("CLUSTER NODES on %s: %w", n.Addr, err)
			continue
		}
		top := parseClusterNodes(text)
		c.mu.Lock()
		for id, e := range top {
			if !e.master && e.masterID != "" {
				c.replicaOf[id] = e.masterID
			}
		}
		for id, e := range top {
			e.formerReplicaOf = c.replicaOf[id]
			top[id] = e
		}
		c.mu.Unlock()
		return top, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no cluster node is running")
	}
	return nil, lastErr
}

func parseClusterNodes(text string) map[string]nodeEntry {
	top := map[string]nodeEntry{}
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := strings.Split(f[2], ",")
		e := nodeEntry{master: slices.Contains(flags, "master")}
		if f[3] != "-" {
			e.masterID = f[3]
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") { // a slot being migrated
				continue
			}
			lo, hi, found := strings.Cut(s, "-")
			if !found {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil {
				e.slots = append(e.slots, [2]int{a, b})
			}
		}
		top[f[0]] = e
	}
	return top
}

// do sends one command to the node on a short-lived connection.
func (p *Proc) do(ctx context.Context, args ...any) *redis.Cmd {
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cmd := rdb.Do(ctx, args...)
	_ = cmd.Err()
	return cmd
}

// linkUp reports, as an error, a replica whose link to its master is down.
func linkUp(ctx context.Context, p *Proc) error {
	info, err := p.do(ctx, "info", "replication").Text()
	if err != nil {
		return fmt.Errorf("INFO replication on %s: %w", p.Addr, err)
	}
	if v := infoField(info, "master_link_status"); v != "up" {
		return fmt.Errorf("%s: master_link_status:%s", p.Addr, v)
	}
	return nil
}

// infoField returns the value of field in the text of INFO or CLUSTER INFO.
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	if p.cmd == nil || p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Pause freezes the process (SIGSTOP): it keeps its connections but
// answers nothing until [Proc.Resume]. A paused process is still killed at
// cleanup.
func (p *Proc) Pause(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("pausing %s: %v", p.Addr, err)
	}
}

// Resume lets a paused process run again (SIGCONT).
func (p *Proc) Resume(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("resuming %s: %v", p.Addr, err)
	}
}
