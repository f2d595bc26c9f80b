// Package webhook sends keygate's events to HTTP endpoints, signed the
// Standard Webhooks way (webhook-id, webhook-timestamp, webhook-signature):
// every audit event (api_key.created, .updated, .revoked, …), plus
// api_key.expiring seven days and one day before a key expires, and
// api_key.credits_exhausted when a verification spends a key's last credit.
//
//	d, err := webhook.New(rdb, webhook.Options{
//		URLs:   []string{"https://hooks.example.com/keygate"},
//		Secret: os.Getenv("KEYGATE_WEBHOOK_SECRET"), // whsec_…
//		Audit:  auditLog,
//		Store:  store,
//	})
//	if err != nil { … }
//	go d.Run(ctx)
//
// Delivery is at least once: each message goes to each URL until the URL
// answers 2xx, retried with a backoff that doubles (5 s, 10 s, 20 s, … at
// most an hour apart) for 24 hours. The state is in Redis (see queue.go),
// so several serve instances share the work, and a restart, or a worker
// killed in the middle of a delivery, loses nothing: a delivery being
// attempted is leased, and taken up again once its lease ends. A receiver
// may get a message twice (deduplicate by webhook-id) and out of order
// (read the payload's timestamp).
//
// Every body is {"type":…,"timestamp":"…Z","data":…}: for audit events
// data is the event, for the others {"api_key":{…},…}, the key without
// its secret (which keygate does not have).
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// The types of the messages that are not audit events.
const (
	TypeExpiring         = "api_key.expiring"
	TypeCreditsExhausted = "api_key.credits_exhausted"
)

// noticeDays are how many days before a key's expiration api_key.expiring
// is sent.
var noticeDays = []int{7, 1}

// Options configure a [Dispatcher]. URLs, Secret, Audit and Store are
// required; every other field has a working zero value.
type Options struct {
	// URLs receive every message (KEYGATE_WEBHOOK_URLS): http or https.
	URLs []string
	// Secret signs them (KEYGATE_WEBHOOK_SECRET): "whsec_" and the base64
	// of at least 24 random bytes.
	Secret string
	// Namespace prefixes the Redis keys, as the store's does. Default "keygate".
	Namespace string
	// Audit is the log whose events are sent.
	Audit *audit.Log
	// Store is read for the keys of expiry notices.
	Store *keystore.Store
	// Timeout bounds one attempt (KEYGATE_WEBHOOK_TIMEOUT). Default 10s. A
	// delivery is leased for twice as long: a worker that dies leaves it to
	// another that long.
	Timeout time.Duration
	// Backoff is the wait before the first retry; each later wait is as
	// long as the message has been waiting, so the waits double, up to
	// MaxBackoff. Defaults 5s and 1h.
	Backoff, MaxBackoff time.Duration
	// MaxAge is how long a message is retried. Default 24h.
	MaxAge time.Duration
	// PollInterval is how often the worker looks for work. Default 1s.
	PollInterval time.Duration
	// Client sends the requests. Default: one that follows no redirect
	// (a 3xx is a failed attempt).
	Client *http.Client
	// Now is the clock of schedules and signatures. Default time.Now.
	Now func() time.Time
	// Logger receives failed attempts. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives keygate_webhook_deliveries_total{result} and
	// keygate_webhook_oldest_pending_seconds. Default: none.
	Registerer prometheus.Registerer
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = "keygate"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = 5 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Hour
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// CheckURLs reports the first URL that is not an absolute http or https
// URL. Errors name the URL without its user information.
func CheckURLs(urls []string) error {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			if u != nil {
				u.User = nil
				s = u.Redacted()
			}
			return fmt.Errorf("webhook URL %q must be an absolute http:// or https:// URL", s)
		}
	}
	return nil
}

// Dispatcher turns events into messages and delivers them. Any number of
// dispatchers, in any number of processes, may share one Redis.
type Dispatcher struct {
	rdb     redis.UniversalClient
	opts    Options
	names   names
	signer  *Signer
	urls    map[string]string // by hash
	hashes  []string
	metrics *metrics
}

// New returns a dispatcher; [Dispatcher.Run] starts its work.
func New(rdb redis.UniversalClient, opts Options) (*Dispatcher, error) {
	opts = opts.withDefaults()
	switch {
	case len(opts.URLs) == 0:
		return nil, errors.New("webhook: no URL")
	case opts.Audit == nil || opts.Store == nil:
		return nil, errors.New("webhook: Options.Audit and Options.Store are required")
	}
	if err := CheckURLs(opts.URLs); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	signer, err := NewSigner(opts.Secret)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("webhook: registering metrics: %w", err)
	}
	d := &Dispatcher{rdb: rdb, opts: opts, names: newNames(opts.Namespace), signer: signer,
		urls: map[string]string{}, metrics: m}
	for _, u := range opts.URLs {
		h := urlHash(u)
		if _, dup := d.urls[h]; !dup {
			d.urls[h] = u
			d.hashes = append(d.hashes, h)
		}
	}
	return d, nil
}

// Run works until ctx is done: every PollInterval it turns new audit
// events and due expiry notices into messages, and delivers what is due.
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.opts.PollInterval)
	defer t.Stop()
	for {
		if err := d.Poll(ctx); err != nil && ctx.Err() == nil {
			d.opts.Logger.Warn("webhooks: Redis", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll does one round of the work: queue, then deliver everything due.
func (d *Dispatcher) Poll(ctx context.Context) error {
	if err := d.feed(ctx); err != nil {
		return err
	}
	if err := d.sendNotices(ctx); err != nil {
		return err
	}
	for {
		n, err := d.deliverDue(ctx)
		if err != nil || n == 0 {
			return err
		}
	}
}

// feedBatch is how many audit events one feed reads.
const feedBatch = 100

// keys are the Redis keys of feedScript and noticeScript, in their order.
func (d *Dispatcher) keys() []string {
	n := d.names
	return []string{n.cursor(), n.inbox(), n.due(), n.born(), n.body(), n.expiring()}
}

// feed queues the audit events recorded since the cursor, with the expiry
// notices they schedule or cancel, and what the inbox holds.
func (d *Dispatcher) feed(ctx context.Context) error {
	cursor, err := d.rdb.Get(ctx, d.names.cursor()).Result()
	if errors.Is(err, redis.Nil) {
		return d.start(ctx)
	}
	if err != nil {
		return err
	}
	after := cursor
	if cursor == cursorStart {
		after = ""
	}
	events, err := d.opts.Audit.After(ctx, after, feedBatch)
	if err != nil {
		return err
	}
	now := d.opts.Now()
	next := cursor
	args := []any{cursor, "", ms(now), len(d.hashes)}
	for _, h := range d.hashes {
		args = append(args, h)
	}
	args = append(args, len(events))
	var add, cancel []any
	for _, e := range events {
		body, err := payload(string(e.Action), time.UnixMilli(e.Time), e)
		if err != nil {
			return err
		}
		args = append(args, e.ID, ms(now), body)
		next = e.ID
		a, c := notices(e)
		add, cancel = append(add, a...), append(cancel, c...)
	}
	args[1] = next
	args = append(append(append(args, len(add)/2), add...), len(cancel))
	args = append(args, cancel...)
	return feedScript.Run(ctx, d.rdb, d.keys(), args...).Err()
}

// cursorStart is the cursor before the first event: webhooks were
// configured when the log was empty.
const cursorStart = "start"

// start sets the cursor at the newest event, so that events recorded
// before webhooks were configured are not sent, and schedules the expiry
// notices of the keys that exist. Only the first worker ever does.
func (d *Dispatcher) start(ctx context.Context) error {
	newest, err := d.opts.Audit.Newest(ctx)
	if err != nil {
		return err
	}
	if newest == "" {
		newest = cursorStart
	}
	first, err := d.rdb.SetNX(ctx, d.names.cursor(), newest, 0).Result()
	if err != nil || !first {
		return err
	}
	now := d.opts.Now()
	for offset := 0; ; offset += keystore.MaxLimit {
		page, err := d.opts.Store.List(ctx, keystore.ListParams{IncludeInvalid: true, Limit: keystore.MaxLimit, Offset: offset})
		if err != nil {
			return err
		}
		var z []redis.Z
		for _, k := range page.Data {
			if k.Expiration == nil || k.Revoked {
				continue
			}
			for _, days := range noticeDays {
				if due := *k.Expiration - int64(days)*dayMs; due > now.UnixMilli() {
					z = append(z, redis.Z{Score: float64(due), Member: noticeMember(k.ID, days)})
				}
			}
		}
		if len(z) > 0 {
			if err := d.rdb.ZAdd(ctx, d.names.expiring(), z...).Err(); err != nil {
				return err
			}
		}
		if len(page.Data) < keystore.MaxLimit {
			return nil
		}
	}
}

const dayMs = int64(24 * time.Hour / time.Millisecond)

func noticeMember(id string, days int) string { return id + " " + strconv.Itoa(days) }

// notices returns the expiry notices an audit event schedules (member,
// due pairs) and cancels: a new expiration reschedules both, none or a
// revoke or delete cancels them. A notice already past when the event was
// recorded is not scheduled.
func notices(e *audit.Event) (add, cancel []any) {
	if e.APIKeyID == "" {
		return nil, nil
	}
	switch e.Action {
	case audit.Revoked, audit.Deleted, audit.BulkRevoked:
		for _, days := range noticeDays {
			cancel = append(cancel, noticeMember(e.APIKeyID, days))
		}
		return nil, cancel
	}
	ch, ok := e.Changes["expiration"]
	if !ok {
		return nil, nil
	}
	var exp *int64
	json.Unmarshal(ch.To, &exp)
	for _, days := range noticeDays {
		m := noticeMember(e.APIKeyID, days)
		if exp != nil && *exp-int64(days)*dayMs > e.Time {
			add = append(add, m, *exp-int64(days)*dayMs)
		} else {
			cancel = append(cancel, m)
		}
	}
	return add, cancel
}

// keyNotice is the data of the messages that are not audit events.
type keyNotice struct {
	APIKey               *keystore.APIKey `json:"api_key"`
	DaysBeforeExpiration int              `json:"days_before_expiration,omitempty"`
}

// sendNotices queues the expiry notices that are due, for keys that still
// expire when the notice was scheduled for; the others are dropped.
func (d *Dispatcher) sendNotices(ctx context.Context) error {
	now := d.opts.Now()
	due, err := d.rdb.ZRangeByScoreWithScores(ctx, d.names.expiring(),
		&redis.ZRangeBy{Min: "-inf", Max: ms(now), Count: feedBatch}).Result()
	if err != nil {
		return err
	}
	for _, z := range due {
		member := z.Member.(string)
		id, daysText, _ := strings.Cut(member, " ")
		days, _ := strconv.Atoi(daysText)
		k, err := d.opts.Store.Get(ctx, id)
		if err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return err
		}
		args := []any{member, int64(z.Score), ms(now), len(d.hashes)}
		for _, h := range d.hashes {
			args = append(args, h)
		}
		if k != nil && !k.Revoked && !k.ExpiredAt(now) && k.Expiration != nil &&
			*k.Expiration-int64(days)*dayMs == int64(z.Score) {
			body, err := payload(TypeExpiring, now, keyNotice{APIKey: k, DaysBeforeExpiration: days})
			if err != nil {
				return err
			}
			msgID := "exp_" + id + "_" + daysText + "d_" + strconv.FormatInt(*k.Expiration, 10)
			args = append(args, msgID, ms(now), body)
		}
		if err := noticeScript.Run(ctx, d.rdb, d.keys(), args...).Err(); err != nil {
			return err
		}
	}
	return nil
}

// concurrency is how many deliveries one dispatcher attempts at once.
const concurrency = 4

// deliverDue leases the deliveries due now and attempts them; it returns
// how many it leased.
func (d *Dispatcher) deliverDue(ctx context.Context) (int, error) {
	now := d.opts.Now()
	args := []any{ms(now), ms(now.Add(2 * d.opts.Timeout)), concurrency * 2, ms(now.Add(-d.opts.MaxAge))}
	for _, h := range d.hashes {
		args = append(args, h)
	}
	reply, err := claimScript.Run(ctx, d.rdb, []string{d.names.due(), d.names.born(), d.names.body()}, args...).StringSlice()
	if err != nil {
		return 0, err
	}
	if len(reply) == 0 {
		return 0, fmt.Errorf("claim script replied nothing")
	}
	d.metrics.observeOldest(reply[len(reply)-1], now)
	reply = reply[:len(reply)-1]
	var wg sync.WaitGroup
	sem := make(chan struct{}, concurrency)
	for i := 0; i+2 < len(reply); i += 3 {
		member, bornText, body := reply[i], reply[i+1], reply[i+2]
		bornMs, _ := strconv.ParseFloat(bornText, 64)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d.attempt(ctx, member, time.UnixMilli(int64(bornMs)), []byte(body))
		})
	}
	wg.Wait()
	return len(reply) / 3, ctx.Err()
}

// attempt sends one delivery once and records how it went.
func (d *Dispatcher) attempt(ctx context.Context, member string, born time.Time, body []byte) {
	hash, msgID, _ := strings.Cut(member, " ")
	target := d.urls[hash]
	err := d.send(ctx, target, msgID, body)
	if ctx.Err() != nil {
		return // shutting down: the lease hands it to the next worker
	}
	now := d.opts.Now()
	wait := min(max(d.opts.Backoff, now.Sub(born)), d.opts.MaxBackoff)
	wait += time.Duration(rand.Int64N(int64(wait)/10 + 1)) // spread retries of a burst
	next := min(now.Add(wait).UnixMilli(), born.Add(d.opts.MaxAge).UnixMilli())
	ok := "0"
	if err == nil {
		ok = "1"
	}
	// The outcome is written even when the request was cut short by the
	// context, so a bounded context of its own.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	status, serr := completeScript.Run(wctx, d.rdb, []string{d.names.due(), d.names.born(), d.names.body()},
		member, ok, next, now.Add(-d.opts.MaxAge).UnixMilli()).Int()
	switch {
	case serr != nil:
		d.opts.Logger.Warn("webhooks: recording a delivery", "id", msgID, "err", serr)
	case err == nil:
		d.metrics.deliveries.WithLabelValues("delivered").Inc()
	case status == 2:
		d.metrics.deliveries.WithLabelValues("expired").Inc()
		d.opts.Logger.Error("webhook given up after retrying", "id", msgID, "url", redact(target), "max_age", d.opts.MaxAge, "err", err)
	default:
		d.metrics.deliveries.WithLabelValues("failed").Inc()
		d.opts.Logger.Warn("webhook attempt failed; retrying", "id", msgID, "url", redact(target),
			"retry_in", time.UnixMilli(next).Sub(now).Round(time.Millisecond), "err", err)
	}
}

// send POSTs one signed message.
func (d *Dispatcher) send(ctx context.Context, target, msgID string, body []byte) error {
	if target == "" {
		return errors.New("no such URL")
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "keygate-webhooks")
	d.signer.Sign(req.Header, msgID, d.opts.Now(), body)
	resp, err := d.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a token
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %d", resp.StatusCode)
	}
	return nil
}

// redact is a URL as logs show it: without user information or query.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "?"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

// payload is the body of every message.
func payload(typ string, ts time.Time, data any) ([]byte, error) {
	b, err := json.Marshal(struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      any    `json:"data"`
	}{typ, ts.UTC().Format("2006-01-02T15:04:05.000Z"), data})
	if err != nil {
		return nil, fmt.Errorf("encoding webhook %s: %w", typ, err)
	}
	return b, nil
}
