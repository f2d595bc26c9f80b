package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// The log and the snapshots hold records, each saying what a key is now:
// never a command to run again. Replaying a record twice, or over a state
// that already holds it, changes nothing, which is what lets a snapshot be
// taken while writes go on (compact.go).
//
//	put     key, type, expiry, content   the key is exactly this
//	del     key                          the key does not exist
//	expire  key, expiry                  the key's TTL (0: none)
//	zset    key, (member, present, score)...   these members of a sorted set
//	hash    key, (field, present, value)...    these fields of a hash
//	set     key, (member, present)...          these members of a set
//	reset                                the data set is exactly the puts that follow
//	end     count                        the end of a snapshot
//
// Strings are a uvarint length and the bytes; integers are uvarints (the
// expiry is Unix milliseconds); scores are the 8 bytes of the float64.
const (
	recPut    byte = 1
	recDel    byte = 2
	recExpire byte = 3
	recZSet   byte = 4
	recHash   byte = 5
	recSet    byte = 6
	recReset  byte = 7
	recEnd    byte = 8
)

// Value types in a put.
const (
	typeString byte = 's'
	typeHash   byte = 'h'
	typeList   byte = 'l'
	typeSet    byte = 'S'
	typeZSet   byte = 'z'
)

// value is the content of a key, as read from miniredis.
type value struct {
	typ      byte
	str      string
	items    []string  // list items, set members; hash: field, value, field, value…
	scores   []float64 // zset: the score of items[i]
	expireAt int64     // Unix ms; 0: no TTL
}

// change is one member, field or set element of a member-level record.
type change struct {
	name    string
	present bool
	value   string  // hash
	score   float64 // zset
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func appendPut(b []byte, key string, v *value) []byte {
	b = append(b, recPut)
	b = appendString(b, key)
	b = append(b, v.typ)
	b = binary.AppendUvarint(b, uint64(v.expireAt))
	switch v.typ {
	case typeString:
		b = appendString(b, v.str)
	default:
		b = binary.AppendUvarint(b, uint64(len(v.items)))
		for i, it := range v.items {
			b = appendString(b, it)
			if v.typ == typeZSet {
				b = appendFloat(b, v.scores[i])
			}
		}
	}
	return b
}

func appendDel(b []byte, key string) []byte {
	return appendString(append(b, recDel), key)
}

func appendExpire(b []byte, key string, at int64) []byte {
	b = appendString(append(b, recExpire), key)
	return binary.AppendUvarint(b, uint64(at))
}

// appendMembers writes a member-level record of kind kindZSet, kindHash or
// kindSet.
func appendMembers(b []byte, kind byte, key string, cs []change) []byte {
	b = appendString(append(b, memberRecord[kind]), key)
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for _, c := range cs {
		b = appendString(b, c.name)
		if !c.present {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		switch kind {
		case kindZSet:
			b = appendFloat(b, c.score)
		case kindHash:
			b = appendString(b, c.value)
		}
	}
	return b
}

var memberRecord = map[byte]byte{kindZSet: recZSet, kindHash: recHash, kindSet: recSet}

func appendEnd(b []byte, count int) []byte {
	return binary.AppendUvarint(append(b, recEnd), uint64(count))
}

// errCorrupt reports a record that does not decode: a checksum matched, so
// this is a bug or deliberate damage, never a torn write.
var errCorrupt = errors.New("record does not decode")

// decoder reads records from a payload whose checksum matched.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) more() bool { return d.err == nil && len(d.b) > 0 }

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a number of items, each at least one byte long.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) float() float64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail()
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return f
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.b = nil
}

// applier replays records into the engine.
type applier struct {
	c         *conn
	exp       *expiries
	setExpiry func(key string, at int64)
	fresh     bool // the engine is empty: a put needs no DEL first
	ended     bool // an end record was read
	keys      int  // puts applied since the last reset
}

// apply replays the records of one payload, whose checksum matched.
func (a *applier) apply(payload []byte) error {
	d := &decoder{b: payload}
	for d.more() {
		if a.ended {
			return fmt.Errorf("%w: data after the end of a snapshot", errCorrupt)
		}
		if err := a.record(d); err != nil {
			return err
		}
	}
	return d.err
}

func (a *applier) record(d *decoder) error {
	op := d.byte()
	switch op {
	case recPut:
		key := d.string()
		v := value{typ: d.byte(), expireAt: int64(d.uvarint())}
		if v.typ == typeString {
			v.str = d.string()
		} else {
			n := d.count()
			v.items = make([]string, 0, n)
			for range n {
				v.items = append(v.items, d.string())
				if v.typ == typeZSet {
					v.scores = append(v.scores, d.float())
				}
			}
		}
		if d.err != nil {
			return d.err
		}
		a.keys++
		return a.put(key, &v)
	case recDel:
		key := d.string()
		if d.err != nil {
			return d.err
		}
		a.exp.forget(key)
		return a.c.ok("DEL", key)
	case recExpire:
		key, at := d.string(), int64(d.uvarint())
		if d.err != nil {
			return d.err
		}
		return a.expire(key, at)
	case recZSet, recHash, recSet:
		return a.members(op, d)
	case recReset:
		a.exp.reset()
		a.keys = 0
		return a.c.ok("FLUSHALL")
	case recEnd:
		if n := d.uvarint(); d.err == nil && int(n) != a.keys {
			return fmt.Errorf("%w: snapshot ends after %d keys, says %d", errCorrupt, a.keys, n)
		}
		a.ended = true
		return d.err
	}
	d.fail()
	return fmt.Errorf("%w: unknown record type %d", errCorrupt, op)
}

// chunk bounds the arguments of one command during replay.
const chunk = 1024

func (a *applier) put(key string, v *value) error {
	if !a.fresh {
		if err := a.c.ok("DEL", key); err != nil {
			return err
		}
	}
	a.exp.forget(key)
	var err error
	switch v.typ {
	case typeString:
		err = a.c.ok("SET", key, v.str)
	case typeHash:
		err = a.bulk("HSET", key, v.items, 2)
	case typeList:
		err = a.bulk("RPUSH", key, v.items, 1)
	case typeSet:
		err = a.bulk("SADD", key, v.items, 1)
	case typeZSet:
		args := make([]string, 0, 2*len(v.items))
		for i, m := range v.items {
			args = append(args, formatScore(v.scores[i]), m)
		}
		err = a.bulk("ZADD", key, args, 2)
	default:
		return fmt.Errorf("%w: unknown value type %q", errCorrupt, v.typ)
	}
	if err != nil || v.expireAt == 0 {
		return err
	}
	return a.expire(key, v.expireAt)
}

// bulk runs cmd key args... in chunks of whole groups of size group.
func (a *applier) bulk(cmd, key string, args []string, group int) error {
	for len(args) > 0 {
		n := min(len(args), chunk*group)
		if err := a.c.ok(append([]string{cmd, key}, args[:n]...)...); err != nil {
			return err
		}
		args = args[n:]
	}
	return nil
}

func (a *applier) expire(key string, at int64) error {
	if at == 0 {
		a.exp.forget(key)
		return a.c.ok("PERSIST", key)
	}
	// A key that expired meanwhile keeps its expiry here: a later record
	// may still change it, and the store deletes what is due once the
	// replay is done.
	if a.c.exists(key) {
		a.setExpiry(key, at)
	}
	return nil
}

func (a *applier) members(op byte, d *decoder) error {
	key := d.string()
	n := d.count()
	var add, rem []string
	for range n {
		name := d.string()
		present := d.byte() == 1
		switch {
		case !present:
			rem = append(rem, name)
		case op == recZSet:
			add = append(add, formatScore(d.float()), name)
		case op == recHash:
			add = append(add, name, d.string())
		default:
			add = append(add, name)
		}
	}
	if d.err != nil {
		return d.err
	}
	mc := memberCmds[op]
	if len(add) > 0 {
		if err := a.bulk(mc.add, key, add, mc.group); err != nil {
			if !isWrongType(err) {
				return err
			}
			// Cannot happen with a log this store wrote; if it does, the
			// newer record wins.
			if err := a.c.ok("DEL", key); err != nil {
				return err
			}
			a.exp.forget(key)
			if err := a.bulk(mc.add, key, add, mc.group); err != nil {
				return err
			}
		}
	}
	if len(rem) > 0 {
		if err := a.bulk(mc.rem, key, rem, 1); err != nil && !isWrongType(err) {
			return err
		}
	}
	if a.exp.has(key) && !a.c.exists(key) {
		a.exp.forget(key)
	}
	return nil
}

// memberCmds are the commands that replay member-level records.
var memberCmds = map[byte]struct {
	add, rem string
	group    int // arguments per added member
}{
	recZSet: {"ZADD", "ZREM", 2},
	recHash: {"HSET", "HDEL", 2},
	recSet:  {"SADD", "SREM", 1},
}

func formatScore(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
