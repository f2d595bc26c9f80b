package embedded

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
)

// conn runs commands on the engine in process, without a network
// connection: the way the engine runs a Lua script's calls. The store reads
// what a write changed through it, and replays records through it, so that
// both see exactly what a Redis client sees. A conn is used by one
// goroutine at a time.
type conn struct {
	srv  *server.Server
	out  bytes.Buffer
	w    *bufio.Writer
	r    *bufio.Reader
	peer *server.Peer
}

func newConn(srv *server.Server) *conn {
	c := &conn{srv: srv}
	c.w = bufio.NewWriter(&c.out)
	c.r = bufio.NewReader(&c.out)
	c.peer = server.NewPeer(c.w)
	return c
}

// do runs one command and returns its reply: a string, an int, nil, a
// []any of those, or an error for an error reply.
func (c *conn) do(args ...string) (any, error) {
	c.out.Reset()
	c.r.Reset(&c.out)
	c.srv.Dispatch(c.peer, args)
	c.w.Flush()
	reply, err := server.ParseReply(c.r)
	if err != nil {
		return nil, replyError{err}
	}
	if s, ok := reply.(server.Simple); ok {
		return string(s), nil
	}
	return reply, nil
}

// replyError is an error reply of the engine.
type replyError struct{ err error }

func (e replyError) Error() string { return e.err.Error() }

func isWrongType(err error) bool {
	var re replyError
	return errors.As(err, &re) && strings.HasPrefix(re.err.Error(), "WRONGTYPE")
}

// ok runs a command whose reply does not matter, only its success.
func (c *conn) ok(args ...string) error {
	_, err := c.do(args...)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	return nil
}

func (c *conn) int(args ...string) (int, error) {
	r, err := c.do(args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", args[0], err)
	}
	n, ok := r.(int)
	if !ok {
		return 0, fmt.Errorf("%s: unexpected reply %T", args[0], r)
	}
	return n, nil
}

func (c *conn) exists(key string) bool {
	n, err := c.int("EXISTS", key)
	return err == nil && n == 1
}

// strings runs a command that answers an array of strings (nil entries
// become "" and are reported in nils).
func (c *conn) strings(args ...string) (out []string, nils []bool, err error) {
	r, err := c.do(args...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", args[0], err)
	}
	if r == nil {
		return nil, nil, nil
	}
	arr, ok := r.([]any)
	if !ok {
		return nil, nil, fmt.Errorf("%s: unexpected reply %T", args[0], r)
	}
	out = make([]string, len(arr))
	nils = make([]bool, len(arr))
	for i, v := range arr {
		switch v := v.(type) {
		case string:
			out[i] = v
		case int:
			out[i] = strconv.Itoa(v)
		case nil:
			nils[i] = true
		default:
			return nil, nil, fmt.Errorf("%s: unexpected reply element %T", args[0], v)
		}
	}
	return out, nils, nil
}

// read returns the content and type of key, or ok false when it does not
// exist. The expiry is not read: the store keeps expiries itself.
func (c *conn) read(key string) (v *value, ok bool, err error) {
	t, err := c.do("TYPE", key)
	if err != nil {
		return nil, false, err
	}
	switch t {
	case "none":
		return nil, false, nil
	case "string":
		r, err := c.do("GET", key)
		if err != nil {
			return nil, false, err
		}
		s, ok := r.(string)
		return &value{typ: typeString, str: s}, ok, nil
	case "hash":
		items, _, err := c.strings("HGETALL", key)
		return &value{typ: typeHash, items: items}, len(items) > 0, err
	case "list":
		items, _, err := c.strings("LRANGE", key, "0", "-1")
		return &value{typ: typeList, items: items}, len(items) > 0, err
	case "set":
		items, _, err := c.strings("SMEMBERS", key)
		return &value{typ: typeSet, items: items}, len(items) > 0, err
	case "zset":
		flat, _, err := c.strings("ZRANGE", key, "0", "-1", "WITHSCORES")
		if err != nil {
			return nil, false, err
		}
		v := &value{typ: typeZSet, items: make([]string, 0, len(flat)/2), scores: make([]float64, 0, len(flat)/2)}
		for i := 0; i+1 < len(flat); i += 2 {
			score, err := strconv.ParseFloat(flat[i+1], 64)
			if err != nil {
				return nil, false, fmt.Errorf("ZRANGE: score %q: %w", flat[i+1], err)
			}
			v.items = append(v.items, flat[i])
			v.scores = append(v.scores, score)
		}
		return v, len(v.items) > 0, nil
	}
	return nil, false, fmt.Errorf("key %q holds a %v, which the embedded store does not keep", key, t)
}

// read is c.read, but a sorted set is copied through the engine's Go API:
// ZRANGE sorts the whole set while it holds the engine's lock, which stalls
// every other command for as long as the sort takes, where copying the
// set's map under it is one pass with no sort.
func (s *Store) read(c *conn, key string) (*value, bool, error) {
	for range 3 {
		if s.mr.Type(key) != "zset" {
			v, ok, err := c.read(key)
			if !isWrongType(err) {
				return v, ok, err
			}
			continue // the key changed type meanwhile
		}
		m, err := s.mr.SortedSet(key)
		switch {
		case errors.Is(err, miniredis.ErrKeyNotFound):
			return nil, false, nil
		case errors.Is(err, miniredis.ErrWrongType):
			continue
		case err != nil:
			return nil, false, err
		}
		// The map is the engine's own: read it under the engine's lock.
		s.mr.Lock()
		v := &value{typ: typeZSet, items: make([]string, 0, len(m)), scores: make([]float64, 0, len(m))}
		for member, score := range m {
			v.items = append(v.items, member)
			v.scores = append(v.scores, score)
		}
		s.mr.Unlock()
		return v, len(v.items) > 0, nil
	}
	return nil, false, fmt.Errorf("key %q keeps changing type", key)
}

// members reads the named members (zset), fields (hash) or elements (set)
// of key, which must be of that kind.
func (c *conn) members(kind byte, key string, names []string) ([]change, error) {
	out := make([]change, len(names))
	for i, n := range names {
		out[i].name = n
	}
	switch kind {
	case kindZSet:
		scores, nils, err := c.strings(append([]string{"ZMSCORE", key}, names...)...)
		if err != nil {
			return nil, err
		}
		for i := range out {
			if out[i].present = !nils[i]; out[i].present {
				if out[i].score, err = strconv.ParseFloat(scores[i], 64); err != nil {
					return nil, fmt.Errorf("ZMSCORE: %w", err)
				}
			}
		}
	case kindHash:
		vals, nils, err := c.strings(append([]string{"HMGET", key}, names...)...)
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i].present, out[i].value = !nils[i], vals[i]
		}
	case kindSet:
		flags, _, err := c.strings(append([]string{"SMISMEMBER", key}, names...)...)
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i].present = flags[i] == "1"
		}
	}
	return out, nil
}

// expiries are the absolute expiry times of the keys that have a TTL. The
// engine keeps a TTL as a duration that only counts down when told to, so
// the store keeps the time itself: to log it, to restore it, and to expire
// keys (expire.go).
type expiries struct {
	mu sync.Mutex
	m  map[string]expiry
}

// expiry is a key's expiry time and the duration the store left in the
// engine for it, its tag: whole milliseconds and a random fraction of one,
// which no command writes. Finding the tag there later means that no
// command set the TTL since.
type expiry struct {
	at  int64 // Unix ms
	tag time.Duration
}

func newExpiries() *expiries { return &expiries{m: map[string]expiry{}} }

func (e *expiries) set(key string, x expiry) {
	e.mu.Lock()
	e.m[key] = x
	e.mu.Unlock()
}

func (e *expiries) get(key string) (expiry, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	return x, ok
}

func (e *expiries) has(key string) bool {
	_, ok := e.get(key)
	return ok
}

func (e *expiries) forget(key string) {
	e.mu.Lock()
	delete(e.m, key)
	e.mu.Unlock()
}

func (e *expiries) reset() {
	e.mu.Lock()
	e.m = map[string]expiry{}
	e.mu.Unlock()
}

// retain forgets the keys not in keep.
func (e *expiries) retain(keep map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k := range e.m {
		if !keep[k] {
			delete(e.m, k)
		}
	}
}

// due returns the keys whose expiry is at or before now.
func (e *expiries) due(now int64) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for k, x := range e.m {
		if x.at <= now {
			out = append(out, k)
		}
	}
	return out
}

func (e *expiries) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.m)
}
