package embedded

import (
	"strconv"
	"strings"
)

// What each Redis command may change, so that the store knows what to read
// back and log once the command has run. Every command miniredis serves is
// in one of the tables below; one that is in neither (a newer miniredis,
// say) is handled as if it had changed every key: the whole data set is
// logged after it.

// spec describes a command that may change data.
type spec struct {
	// keys returns the keys the command may change, from its arguments
	// (without the command name). Nil for commands that name none.
	keys func(args []string) []string
	// members returns the members (sorted set, set) or fields (hash) that a
	// member-level command changes in each of its keys; nil when the
	// arguments do not parse, and the keys are then logged whole.
	members func(args []string) []string
	kind    byte // kindZSet, kindHash or kindSet with members; kindTTL: only the TTL changes
	// ttl: the command may set or clear the TTL of its keys (an ephemeral
	// key's expiry is tracked only after such a command).
	ttl func(args []string) bool
	// blocking: the command may wait for another client's write.
	blocking bool
	// refuse, when set, returns why the command cannot be kept on durable
	// keys (types or options the log does not record).
	refuse func(args []string) string
	// all: the command changes keys it does not name (FLUSHALL).
	all bool
	// copiesTTL: the second key may take the first's TTL (RENAME, COPY).
	copiesTTL bool
}

// readOnly lists the commands that change no key. EVAL and EVALSHA are
// here too: the calls a script makes reach the store one by one.
var readOnly = set(
	"BITCOUNT", "BITPOS", "DBSIZE", "DUMP", "EVALSHA_RO", "EVAL_RO", "EXISTS", "EXPIRETIME",
	"GEODIST", "GEOPOS", "GEORADIUSBYMEMBER_RO", "GEORADIUS_RO", "GEOSEARCH", "GET", "GETBIT",
	"GETRANGE", "HEXISTS", "HGET", "HGETALL", "HKEYS", "HLEN", "HMGET", "HPTTL", "HRANDFIELD",
	"HSCAN", "HSTRLEN", "HTTL", "HVALS", "KEYS", "LINDEX", "LLEN", "LPOS", "LRANGE", "MGET",
	"PEXPIRETIME", "PFCOUNT", "PTTL", "RANDOMKEY", "SCAN", "SCARD", "SDIFF", "SINTER",
	"SINTERCARD", "SISMEMBER", "SMEMBERS", "SMISMEMBER", "SRANDMEMBER", "SSCAN", "STRLEN",
	"SUNION", "TOUCH", "TTL", "TYPE", "XINFO", "XLEN", "XPENDING", "XRANGE", "XREAD",
	"XREVRANGE", "ZCARD", "ZCOUNT", "ZINTER", "ZLEXCOUNT", "ZMSCORE", "ZRANDMEMBER", "ZRANGE",
	"ZRANGEBYLEX", "ZRANGEBYSCORE", "ZRANK", "ZREVRANGE", "ZREVRANGEBYLEX", "ZREVRANGEBYSCORE",
	"ZREVRANK", "ZSCAN", "ZSCORE", "ZUNION",
	// Connection, server, pub/sub and transaction commands: no key changes.
	// The commands of a MULTI are seen as they are queued.
	"AUTH", "CLIENT", "CLUSTER", "COMMAND", "DISCARD", "ECHO", "EVAL", "EVALSHA", "EXEC",
	"HELLO", "INFO", "MEMORY", "MULTI", "OBJECT", "PING", "PSUBSCRIBE", "PUBLISH", "PUBSUB",
	"PUNSUBSCRIBE", "QUIT", "SCRIPT", "SUBSCRIBE", "TIME", "UNSUBSCRIBE", "UNWATCH", "WAIT",
	"WATCH",
)

// What a command changes in a key, when not all of it.
const (
	kindZSet = 'z'
	kindHash = 'h'
	kindSet  = 's'
	kindTTL  = 't'
)

var commands = map[string]*spec{
	// Strings.
	"APPEND":      whole(first),
	"DECR":        whole(first),
	"DECRBY":      whole(first),
	"DELEX":       {keys: first, ttl: always},
	"GETDEL":      {keys: first, ttl: always},
	"GETEX":       {keys: first, ttl: always, kind: kindTTL},
	"GETSET":      {keys: first, ttl: always},
	"INCR":        whole(first),
	"INCRBY":      whole(first),
	"INCRBYFLOAT": whole(first),
	"MSET":        {keys: everyOther, ttl: always},
	"MSETNX":      {keys: everyOther, ttl: always},
	"PSETEX":      {keys: first, ttl: always},
	"SET":         {keys: first, ttl: func(args []string) bool { return !hasWord(args, 2, "KEEPTTL") }},
	"SETBIT":      whole(first),
	"SETEX":       {keys: first, ttl: always},
	"SETNX":       whole(first),
	"SETRANGE":    whole(first),

	// Keys.
	"COPY":      {keys: firstTwo, ttl: always, copiesTTL: true, refuse: refuseWord(2, "DB", "COPY to another database")},
	"DEL":       {keys: all, ttl: always},
	"UNLINK":    {keys: all, ttl: always},
	"EXPIRE":    {keys: first, ttl: always, kind: kindTTL},
	"EXPIREAT":  {keys: first, ttl: always, kind: kindTTL},
	"PEXPIRE":   {keys: first, ttl: always, kind: kindTTL},
	"PEXPIREAT": {keys: first, ttl: always, kind: kindTTL},
	"PERSIST":   {keys: first, ttl: always, kind: kindTTL},
	"RENAME":    {keys: firstTwo, ttl: always, copiesTTL: true},
	"RENAMENX":  {keys: firstTwo, ttl: always, copiesTTL: true},
	"RESTORE":   {keys: first, ttl: always},
	"FLUSHALL":  {all: true},
	"FLUSHDB":   {all: true},
	"MOVE":      {keys: first, refuse: refuseAlways("MOVE to another database")},
	"SWAPDB":    {keys: none, refuse: refuseAlways("SWAPDB")},
	"SELECT": {keys: none, refuse: func(args []string) string {
		return refuseUnless(len(args) == 1 && args[0] == "0", "databases other than 0")
	}},

	// Hashes: HSET and friends are logged field by field.
	"HDEL":         member(kindHash, rest(1)),
	"HINCRBY":      member(kindHash, at(1)),
	"HINCRBYFLOAT": member(kindHash, at(1)),
	"HMSET":        member(kindHash, pairs(1)),
	"HSET":         member(kindHash, pairs(1)),
	"HSETNX":       member(kindHash, at(1)),
	"HEXPIRE":      refused(first, "hash field expiry"),
	"HPERSIST":     refused(first, "hash field expiry"),
	"HSETEX":       refused(first, "hash field expiry"),

	// Lists: logged whole.
	"BLMOVE":     {keys: firstTwo, blocking: true},
	"BLPOP":      {keys: allButLast, blocking: true},
	"BRPOP":      {keys: allButLast, blocking: true},
	"BRPOPLPUSH": {keys: firstTwo, blocking: true},
	"LINSERT":    whole(first),
	"LMOVE":      whole(firstTwo),
	"LMPOP":      whole(numKeys(0)),
	"LPOP":       whole(first),
	"LPUSH":      whole(first),
	"LPUSHX":     whole(first),
	"LREM":       whole(first),
	"LSET":       whole(first),
	"LTRIM":      whole(first),
	"RPOP":       whole(first),
	"RPOPLPUSH":  whole(firstTwo),
	"RPUSH":      whole(first),
	"RPUSHX":     whole(first),

	// Sets.
	"SADD":        member(kindSet, rest(1)),
	"SREM":        member(kindSet, rest(1)),
	"SMOVE":       {keys: firstTwo, members: at(2), kind: kindSet},
	"SPOP":        whole(first),
	"SDIFFSTORE":  whole(first),
	"SINTERSTORE": whole(first),
	"SUNIONSTORE": whole(first),

	// Sorted sets: ZADD, ZREM and ZINCRBY are logged member by member, so
	// that adding to an index of 100,000 entries logs one entry.
	"ZADD":              member(kindZSet, zaddMembers),
	"ZINCRBY":           member(kindZSet, at(2)),
	"ZREM":              member(kindZSet, rest(1)),
	"BZMPOP":            {keys: numKeys(1), blocking: true},
	"BZPOPMAX":          {keys: allButLast, blocking: true},
	"BZPOPMIN":          {keys: allButLast, blocking: true},
	"ZINTERSTORE":       whole(first),
	"ZUNIONSTORE":       whole(first),
	"ZMPOP":             whole(numKeys(0)),
	"ZPOPMAX":           whole(first),
	"ZPOPMIN":           whole(first),
	"ZREMRANGEBYLEX":    whole(first),
	"ZREMRANGEBYRANK":   whole(first),
	"ZREMRANGEBYSCORE":  whole(first),
	"GEOADD":            whole(first),
	"GEORADIUS":         whole(storeKeys),
	"GEORADIUSBYMEMBER": whole(storeKeys),

	// Types the log does not record: refused on durable keys.
	"PFADD":      refused(first, "HyperLogLog"),
	"PFMERGE":    refused(all, "HyperLogLog"),
	"XACK":       refused(first, "streams"),
	"XADD":       refused(first, "streams"),
	"XAUTOCLAIM": refused(first, "streams"),
	"XCLAIM":     refused(first, "streams"),
	"XDEL":       refused(first, "streams"),
	"XGROUP":     refused(second, "streams"),
	"XREADGROUP": {keys: streamKeys, blocking: true, refuse: refuseAlways("streams")},
	"XTRIM":      refused(first, "streams"),
}

// scripts change keys through the calls they make, which the engine
// reports one by one; a client must still treat them as writes.
var scripts = set("EVAL", "EVALSHA", "FCALL")

// specByName and readOnlyByName are commands and readOnly by lower-case
// name, as go-redis names its commands, for the client's side: scripts are
// not read-only there.
var (
	specByName     = map[string]*spec{}
	readOnlyByName = map[string]bool{}
)

func init() {
	for name, s := range commands {
		specByName[strings.ToLower(name)] = s
	}
	for name := range readOnly {
		if !scripts[name] {
			readOnlyByName[strings.ToLower(name)] = true
		}
	}
}

func whole(keys func([]string) []string) *spec { return &spec{keys: keys} }

func member(kind byte, members func([]string) []string) *spec {
	return &spec{keys: first, members: members, kind: kind}
}

func refused(keys func([]string) []string, what string) *spec {
	return &spec{keys: keys, refuse: refuseAlways(what)}
}

func refuseAlways(what string) func([]string) string {
	return func([]string) string { return what + " cannot be kept by the embedded store" }
}

func refuseUnless(ok bool, what string) string {
	if ok {
		return ""
	}
	return what + " cannot be kept by the embedded store"
}

// refuseWord refuses the command when it has the option word at or after
// position from.
func refuseWord(from int, word, what string) func([]string) string {
	return func(args []string) string { return refuseUnless(!hasWord(args, from, word), what) }
}

func always([]string) bool { return true }

func none([]string) []string { return nil }

// first and second name a command's first or second argument as its key.
var first, second = at(0), at(1)

func firstTwo(args []string) []string {
	if len(args) < 2 {
		return first(args)
	}
	return args[:2]
}

func all(args []string) []string { return args }

func allButLast(args []string) []string {
	if len(args) < 2 {
		return nil
	}
	return args[:len(args)-1]
}

func everyOther(args []string) []string {
	out := make([]string, 0, (len(args)+1)/2)
	for i := 0; i < len(args); i += 2 {
		out = append(out, args[i])
	}
	return out
}

// numKeys reads "numkeys key..." starting at position i.
func numKeys(i int) func([]string) []string {
	return func(args []string) []string {
		if len(args) <= i {
			return nil
		}
		n, err := strconv.Atoi(args[i])
		if err != nil || n < 0 || len(args) < i+1+n {
			return nil
		}
		return args[i+1 : i+1+n]
	}
}

// storeKeys are the STORE and STOREDIST destinations of GEORADIUS.
func storeKeys(args []string) []string {
	var out []string
	for i := 1; i+1 < len(args); i++ {
		if w := strings.ToUpper(args[i]); w == "STORE" || w == "STOREDIST" {
			out = append(out, args[i+1])
		}
	}
	return out
}

// streamKeys are the keys after STREAMS in XREADGROUP (the first half).
func streamKeys(args []string) []string {
	for i, a := range args {
		if strings.EqualFold(a, "STREAMS") {
			rest := args[i+1:]
			return rest[:len(rest)/2]
		}
	}
	return nil
}

func at(i int) func([]string) []string {
	return func(args []string) []string {
		if len(args) <= i {
			return nil
		}
		return args[i : i+1]
	}
}

func rest(i int) func([]string) []string {
	return func(args []string) []string {
		if len(args) <= i {
			return nil
		}
		return args[i:]
	}
}

// pairs returns the first of each pair from position i (HSET's fields).
func pairs(i int) func([]string) []string {
	return func(args []string) []string {
		if len(args) <= i || (len(args)-i)%2 != 0 {
			return nil
		}
		return everyOther(args[i:])
	}
}

// zaddMembers returns ZADD's members, after its options.
func zaddMembers(args []string) []string {
	i := 1
	for i < len(args) {
		switch strings.ToUpper(args[i]) {
		case "NX", "XX", "GT", "LT", "CH", "INCR":
			i++
			continue
		}
		break
	}
	if len(args) <= i || (len(args)-i)%2 != 0 {
		return nil
	}
	out := make([]string, 0, (len(args)-i)/2)
	for j := i + 1; j < len(args); j += 2 {
		out = append(out, args[j])
	}
	return out
}

func hasWord(args []string, from int, word string) bool {
	for i := from; i < len(args); i++ {
		if strings.EqualFold(args[i], word) {
			return true
		}
	}
	return false
}

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
