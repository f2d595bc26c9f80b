// Package storedump copies keygate's data between stores, through a file:
// [Export] writes every durable key of a namespace held by a Redis (the
// embedded store's client included) as JSON lines, and [Import] writes
// such a dump into another. Keys, revocations, last-used times, indexes:
// everything keygate keeps is a Redis key, copied as it is.
//
//	n, err := storedump.Export(ctx, embeddedClient, file, storedump.Options{Namespace: "keygate"})
//	n, err = storedump.Import(ctx, redisClient, file, storedump.Options{Namespace: "keygate"})
//
// The dump holds the digests of the secrets, not the secrets: keep it as
// private as the data directory, and give the new store the same
// KEYGATE_HASH_KEY.
package storedump

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Version is the format of the dumps this package writes.
const Version = 1

// Options configure [Export] and [Import].
type Options struct {
	// Namespace is keygate's key prefix (KEYGATE_NAMESPACE). Default
	// "keygate". Import refuses a dump of another namespace.
	Namespace string
	// Ephemeral reports keys not worth copying (the verifier registry,
	// acknowledgements): verifiers recreate them. Default: none.
	Ephemeral func(key string) bool
	// Overwrite lets Import replace keys that exist in the target. Without
	// it, Import writes nothing when any key of the dump exists there.
	Overwrite bool
	// Now is the clock that decides which keys have expired. Default
	// time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "keygate"
	}
	if o.Ephemeral == nil {
		o.Ephemeral = func(string) bool { return false }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// ErrExists reports an Import into a store that already holds some of
// the dump's keys, without Options.Overwrite.
var ErrExists = errors.New("the target already holds keys of the dump")

// ErrBadDump reports an Import input that is not a whole dump of the
// namespace.
var ErrBadDump = errors.New("bad dump")

// header is the first line of a dump.
type header struct {
	Format    string `json:"format"` // "keygate-dump"
	Version   int    `json:"version"`
	Namespace string `json:"namespace"`
	CreatedAt int64  `json:"created_at"` // Unix ms
}

// entry is one key.
type entry struct {
	Key      bin       `json:"key"`
	Type     string    `json:"type"` // string, hash, list, set, zset
	String   *bin      `json:"string,omitempty"`
	Hash     [][2]bin  `json:"hash,omitempty"`
	Items    []bin     `json:"items,omitempty"` // list or set
	ZSet     []zmember `json:"zset,omitempty"`
	ExpireAt int64     `json:"expire_at,omitempty"` // Unix ms
}

// zmember is a member and its score, in the shortest decimal that reads
// back the same float64 ("+Inf" included).
type zmember [2]bin

// trailer is the last line: without it the dump is cut short.
type trailer struct {
	End  bool `json:"end"`
	Keys int  `json:"keys"`
}

// bin is a string that may hold any bytes: a JSON string when it is valid
// UTF-8, else {"base64": "..."}.
type bin string

func (b bin) MarshalJSON() ([]byte, error) {
	if utf8.ValidString(string(b)) {
		return json.Marshal(string(b))
	}
	return json.Marshal(map[string]string{"base64": base64.StdEncoding.EncodeToString([]byte(b))})
}

func (b *bin) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*b = bin(s)
		return nil
	}
	var o struct {
		Base64 *string `json:"base64"`
	}
	if err := json.Unmarshal(data, &o); err != nil || o.Base64 == nil {
		return fmt.Errorf("want a string or {\"base64\": ...}, got %.40s", data)
	}
	raw, err := base64.StdEncoding.DecodeString(*o.Base64)
	if err != nil {
		return err
	}
	*b = bin(raw)
	return nil
}

// batch is how many keys one round trip reads or writes.
const batch = 256

// Export writes every key of the namespace held by rdb, but the ephemeral
// ones, to w, and returns how many. It reads keys with SCAN (on every
// master of a Cluster), so keys written meanwhile may or may not be in
// it: stop the writers first.
func Export(ctx context.Context, rdb redis.UniversalClient, w io.Writer, opts Options) (int, error) {
	opts = opts.withDefaults()
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(header{Format: "keygate-dump", Version: Version, Namespace: opts.Namespace, CreatedAt: opts.Now().UnixMilli()}); err != nil {
		return 0, err
	}
	n := 0
	err := scan(ctx, rdb, opts.Namespace+":*", func(c redis.UniversalClient, keys []string) error {
		keys = slices.DeleteFunc(keys, opts.Ephemeral)
		entries, err := read(ctx, c, keys, opts.Now())
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		n += len(entries)
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("exporting: %w", err)
	}
	if err := enc.Encode(trailer{End: true, Keys: n}); err != nil {
		return n, err
	}
	return n, bw.Flush()
}

// scan calls fn with the keys matching pattern, in batches, on each master.
func scan(ctx context.Context, rdb redis.UniversalClient, pattern string, fn func(redis.UniversalClient, []string) error) error {
	each := func(ctx context.Context, c redis.UniversalClient) error {
		seen := map[string]bool{}
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				return err
			}
			// SCAN may return a key twice.
			keys = slices.DeleteFunc(keys, func(k string) bool { return seen[k] })
			for _, k := range keys {
				seen[k] = true
			}
			for len(keys) > 0 {
				m := min(len(keys), batch)
				if err := fn(c, keys[:m]); err != nil {
					return err
				}
				keys = keys[m:]
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		// ForEachMaster runs its callbacks concurrently; fn takes turns.
		var mu sync.Mutex
		next := fn
		fn = func(c redis.UniversalClient, keys []string) error {
			mu.Lock()
			defer mu.Unlock()
			return next(c, keys)
		}
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return each(ctx, c) })
	}
	return each(ctx, rdb)
}

// read returns the entries of keys; a key that vanished meanwhile is left
// out, and so is one that has expired.
func read(ctx context.Context, c redis.UniversalClient, keys []string, now time.Time) ([]entry, error) {
	types := make([]*redis.StatusCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			types[i] = p.Type(ctx, k)
			ttls[i] = p.PTTL(ctx, k)
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	content := make([]redis.Cmder, len(keys))
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			switch types[i].Val() {
			case "string":
				content[i] = p.Get(ctx, k)
			case "hash":
				content[i] = p.HGetAll(ctx, k)
			case "list":
				content[i] = p.LRange(ctx, k, 0, -1)
			case "set":
				content[i] = p.SMembers(ctx, k)
			case "zset":
				content[i] = p.ZRangeWithScores(ctx, k, 0, -1)
			case "none":
			default:
				return fmt.Errorf("key %q is a %s, which keygate does not write", k, types[i].Val())
			}
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var out []entry
	for i, k := range keys {
		if content[i] == nil || errors.Is(content[i].Err(), redis.Nil) {
			continue
		}
		if err := content[i].Err(); err != nil {
			return nil, fmt.Errorf("reading %q: %w", k, err)
		}
		e := entry{Key: bin(k), Type: types[i].Val()}
		if ttl := ttls[i].Val(); ttl > 0 {
			e.ExpireAt = now.Add(ttl).UnixMilli()
		}
		switch cmd := content[i].(type) {
		case *redis.StringCmd:
			s := bin(cmd.Val())
			e.String = &s
		case *redis.MapStringStringCmd:
			for f, v := range cmd.Val() {
				e.Hash = append(e.Hash, [2]bin{bin(f), bin(v)})
			}
			slices.SortFunc(e.Hash, func(a, b [2]bin) int { return compare(a[0], b[0]) })
		case *redis.StringSliceCmd:
			for _, v := range cmd.Val() {
				e.Items = append(e.Items, bin(v))
			}
		case *redis.ZSliceCmd:
			for _, z := range cmd.Val() {
				e.ZSet = append(e.ZSet, zmember{bin(z.Member.(string)), bin(strconv.FormatFloat(z.Score, 'g', -1, 64))})
			}
		}
		if len(e.Hash)+len(e.Items)+len(e.ZSet) == 0 && e.String == nil {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

func compare(a, b bin) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Import reads a dump from r and writes its keys into rdb, and returns how
// many. It reads the whole dump first, and writes nothing when the dump is
// cut short, is of another namespace, or (without Options.Overwrite) names
// a key rdb already holds. Keys whose expiry has passed are skipped.
func Import(ctx context.Context, rdb redis.UniversalClient, r io.Reader, opts Options) (int, error) {
	opts = opts.withDefaults()
	entries, err := decode(r, opts.Namespace)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadDump, err)
	}
	now := opts.Now().UnixMilli()
	entries = slices.DeleteFunc(entries, func(e entry) bool { return e.ExpireAt != 0 && e.ExpireAt <= now })
	if !opts.Overwrite {
		if n, err := existing(ctx, rdb, entries); err != nil {
			return 0, err
		} else if n > 0 {
			return 0, fmt.Errorf("%w: %d of %d", ErrExists, n, len(entries))
		}
	}
	n := len(entries)
	for len(entries) > 0 {
		m := min(len(entries), batch)
		if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, e := range entries[:m] {
				write(ctx, p, e)
			}
			return nil
		}); err != nil {
			return 0, fmt.Errorf("importing: %w", err)
		}
		entries = entries[m:]
	}
	return n, nil
}

func decode(r io.Reader, namespace string) ([]entry, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	dec.DisallowUnknownFields()
	var h header
	if err := dec.Decode(&h); err != nil || h.Format != "keygate-dump" {
		return nil, fmt.Errorf("not a keygate dump: %v", err)
	}
	if h.Version != Version {
		return nil, fmt.Errorf("dump format %d, this keygate reads %d", h.Version, Version)
	}
	if h.Namespace != namespace {
		return nil, fmt.Errorf("the dump is of namespace %q, not %q (set KEYGATE_NAMESPACE)", h.Namespace, namespace)
	}
	var entries []entry
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("the dump is cut short after %d keys: no end line", len(entries))
			}
			return nil, fmt.Errorf("reading key %d of the dump: %w", len(entries)+1, err)
		}
		var t trailer
		if json.Unmarshal(raw, &t) == nil && t.End {
			if t.Keys != len(entries) {
				return nil, fmt.Errorf("the dump ends after %d keys, says %d", len(entries), t.Keys)
			}
			return entries, nil
		}
		var e entry
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, fmt.Errorf("reading key %d of the dump: %w", len(entries)+1, err)
		}
		if err := e.check(namespace); err != nil {
			return nil, fmt.Errorf("key %d of the dump: %w", len(entries)+1, err)
		}
		entries = append(entries, e)
	}
}

func (e *entry) check(namespace string) error {
	if len(e.Key) <= len(namespace) || string(e.Key[:len(namespace)+1]) != namespace+":" {
		return fmt.Errorf("key %q is not in namespace %q", e.Key, namespace)
	}
	ok := false
	switch e.Type {
	case "string":
		ok = e.String != nil
	case "hash":
		ok = len(e.Hash) > 0
	case "list", "set":
		ok = len(e.Items) > 0
	case "zset":
		ok = len(e.ZSet) > 0
		for _, z := range e.ZSet {
			if _, err := strconv.ParseFloat(string(z[1]), 64); err != nil {
				return fmt.Errorf("key %q: score %q: %w", e.Key, z[1], err)
			}
		}
	}
	if !ok {
		return fmt.Errorf("key %q: type %q without its content", e.Key, e.Type)
	}
	return nil
}

func existing(ctx context.Context, rdb redis.UniversalClient, entries []entry) (int, error) {
	cmds := make([]*redis.IntCmd, len(entries))
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range entries {
			cmds[i] = p.Exists(ctx, string(e.Key))
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("checking the target: %w", err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.Val())
	}
	return n, nil
}

// write replaces a key with its entry: one key per command, so that it
// works on a Cluster.
func write(ctx context.Context, p redis.Pipeliner, e entry) {
	key := string(e.Key)
	p.Del(ctx, key)
	const chunk = 512
	switch e.Type {
	case "string":
		p.Set(ctx, key, string(*e.String), 0)
	case "hash":
		for part := range slices.Chunk(e.Hash, chunk) {
			args := make([]any, 0, 2*len(part))
			for _, fv := range part {
				args = append(args, string(fv[0]), string(fv[1]))
			}
			p.HSet(ctx, key, args...)
		}
	case "list", "set":
		for part := range slices.Chunk(e.Items, chunk) {
			args := make([]any, len(part))
			for i, v := range part {
				args[i] = string(v)
			}
			if e.Type == "list" {
				p.RPush(ctx, key, args...)
			} else {
				p.SAdd(ctx, key, args...)
			}
		}
	case "zset":
		for part := range slices.Chunk(e.ZSet, chunk) {
			zs := make([]redis.Z, len(part))
			for i, z := range part {
				score, _ := strconv.ParseFloat(string(z[1]), 64)
				zs[i] = redis.Z{Score: score, Member: string(z[0])}
			}
			p.ZAdd(ctx, key, zs...)
		}
	}
	if e.ExpireAt != 0 {
		p.PExpireAt(ctx, key, time.UnixMilli(e.ExpireAt))
	}
}
