package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/redis/go-redis/v9"
)

// The delivery state lives in Redis under one hash tag, {wh}, so that its
// scripts run on one node of a Cluster:
//
//	<ns>:{wh}:cursor    string     the last audit event turned into messages
//	<ns>:{wh}:inbox     list       messages from any process ("id born body"), not yet fanned out
//	<ns>:{wh}:due       sorted set deliveries ("<url hash> <message id>") by next attempt, Unix ms
//	<ns>:{wh}:born      sorted set the same deliveries by the time their message was queued
//	<ns>:{wh}:body      hash       delivery → message body
//	<ns>:{wh}:expiring  sorted set "<key id> <days>" by when the expiry notice is due
//
// A delivery being attempted stays in due, moved a lease into the future:
// if its worker dies, another takes it up once the lease ends.
type names struct{ prefix string }

func newNames(namespace string) names { return names{prefix: namespace + ":{wh}:"} }

func (n names) cursor() string   { return n.prefix + "cursor" }
func (n names) inbox() string    { return n.prefix + "inbox" }
func (n names) due() string      { return n.prefix + "due" }
func (n names) born() string     { return n.prefix + "born" }
func (n names) body() string     { return n.prefix + "body" }
func (n names) expiring() string { return n.prefix + "expiring" }

// urlHash names a URL in delivery IDs.
func urlHash(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:8])
}

// fanOut is the Lua that queues message (id, born, body) for every URL
// hash in urls, due at now.
const fanOut = `
local function fan(urls, now, id, born, body)
  for _, u in ipairs(urls) do
    local m = u .. ' ' .. id
    redis.call('ZADD', KEYS[3], now, m)
    redis.call('ZADD', KEYS[4], born, m)
    redis.call('HSET', KEYS[5], m, body)
  end
end
`

// feedScript queues the messages of new audit events, when the cursor
// still is ARGV[1] (another worker may have fed them already), moves it to
// ARGV[2], schedules and cancels expiry notices, and fans out what the
// inbox holds. It returns 1, or 0 when the cursor had moved.
//
// ARGV: expected cursor, new cursor, now, #urls, urls…, #messages,
// (id, born, body)…, #notices to add, (member, due)…, #to cancel, member….
var feedScript = redis.NewScript(fanOut + `
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
local now = ARGV[3]
local i = 4
local urls = {}
for j = 1, tonumber(ARGV[i]) do urls[j] = ARGV[i + j] end
i = i + #urls + 1
for j = 1, tonumber(ARGV[i]) do
  fan(urls, now, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  i = i + 3
end
i = i + 1
for j = 1, tonumber(ARGV[i]) do
  redis.call('ZADD', KEYS[6], ARGV[i + 2], ARGV[i + 1])
  i = i + 2
end
i = i + 1
for j = 1, tonumber(ARGV[i]) do
  redis.call('ZREM', KEYS[6], ARGV[i + 1])
  i = i + 1
end
local inbox = redis.call('LRANGE', KEYS[2], 0, 99)
for _, e in ipairs(inbox) do
  local a = string.find(e, ' ', 1, true)
  local b = a and string.find(e, ' ', a + 1, true)
  if b then fan(urls, now, string.sub(e, 1, a - 1), string.sub(e, a + 1, b - 1), string.sub(e, b + 1)) end
end
if #inbox > 0 then redis.call('LTRIM', KEYS[2], #inbox, -1) end
return 1
`)

// noticeScript queues an expiry notice's message if the notice ARGV[1] is
// still due at ARGV[2] (no other worker sent it, no change moved it), and
// removes it. ARGV: member, due, now, #urls, urls…, then id, born, body
// (absent: the notice is dropped unsent).
var noticeScript = redis.NewScript(fanOut + `
if tonumber(redis.call('ZSCORE', KEYS[6], ARGV[1]) or '-1') ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[6], ARGV[1])
local n = tonumber(ARGV[4])
local urls = {}
for j = 1, n do urls[j] = ARGV[4 + j] end
local i = 5 + n
if ARGV[i] then fan(urls, ARGV[3], ARGV[i], ARGV[i + 1], ARGV[i + 2]) end
return 1
`)

// claimScript leases up to ARGV[3] due deliveries to known URLs (ARGV[5…])
// until ARGV[2], dropping those to unknown URLs queued before ARGV[4]. It
// returns (delivery, born, body)… and, last, the oldest born (” when none).
var claimScript = redis.NewScript(`
local known = {}
for i = 5, #ARGV do known[ARGV[i]] = true end
local max = tonumber(ARGV[3])
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, max * 4)
for _, m in ipairs(due) do
  local u = string.match(m, '^(%S+) ')
  local born = redis.call('ZSCORE', KEYS[2], m)
  if known[u] and #out < max * 3 then
    redis.call('ZADD', KEYS[1], ARGV[2], m)
    out[#out + 1] = m
    out[#out + 1] = born or '0'
    out[#out + 1] = redis.call('HGET', KEYS[3], m) or ''
  elseif not known[u] and tonumber(born or '0') < tonumber(ARGV[4]) then
    redis.call('ZREM', KEYS[1], m)
    redis.call('ZREM', KEYS[2], m)
    redis.call('HDEL', KEYS[3], m)
  end
end
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
out[#out + 1] = oldest[2] or ''
return out
`)

// completeScript ends an attempt of delivery ARGV[1]: delivered (ARGV[2]
// = 1) or given up on (its message was queued at or before ARGV[4]), it goes;
// otherwise it is due again at ARGV[3]. It returns 1 delivered, 2 given
// up, 3 to retry, 0 when another worker had finished it.
var completeScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 0 end
local status = 3
if ARGV[2] == '1' then
  status = 1
elseif tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0') <= tonumber(ARGV[4]) then
  status = 2
end
if status == 3 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
return status
`)

// notifyScript appends ARGV[1] to the inbox KEYS[2], keeping the newest
// ARGV[2], when webhooks have ever been configured (KEYS[1], the cursor,
// exists): without them nothing would empty it.
var notifyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
return 1
`)

// maxInbox bounds the inbox when no worker empties it (no serve has
// webhook URLs): the oldest messages go.
const maxInbox = 10_000

// Notify queues a message for the webhook URLs of whichever serve
// instances have them, from any process on the Redis: the sidecar and the
// middleware report credits running out this way. Where no serve instance
// ever had webhook URLs it does nothing. The message is type
// and data wrapped as every webhook is; id is its webhook-id.
func Notify(ctx context.Context, rdb redis.UniversalClient, namespace, id, typ string, data any, now time.Time) error {
	body, err := payload(typ, now, data)
	if err != nil {
		return err
	}
	n := newNames(namespace)
	entry := id + " " + strconv.FormatInt(now.UnixMilli(), 10) + " " + string(body)
	if err := notifyScript.Run(ctx, rdb, []string{n.cursor(), n.inbox()}, entry, maxInbox).Err(); err != nil {
		return fmt.Errorf("queueing webhook %s: %w: %w", typ, keystore.ErrUnavailable, err)
	}
	return nil
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// CreditsExhausted returns a [keystore.VerifierOptions.CreditsExhausted]
// that queues api_key.credits_exhausted with [Notify], on a goroutine of
// its own so that the verification does not wait. A message that cannot
// be queued within 5 seconds is logged and lost.
func CreditsExhausted(rdb redis.UniversalClient, namespace string, logger *slog.Logger, now func() time.Time) func(*keystore.APIKey) {
	if now == nil {
		now = time.Now
	}
	return func(k *keystore.APIKey) {
		out := *k
		if k.Credits != nil {
			c := *k.Credits
			c.Remaining = 0
			out.Credits = &c
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			t := now()
			id := "crx_" + out.ID + "_" + ms(t)
			if err := Notify(ctx, rdb, namespace, id, TypeCreditsExhausted, keyNotice{APIKey: &out}, t); err != nil {
				logger.Error("webhook api_key.credits_exhausted not queued", "key_id", out.ID, "err", err)
			}
		}()
	}
}
