package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/embedded"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// storeConfig are the flags of every command that talks to Redis.
type storeConfig struct {
	redisURL        string
	redisAddrs      string
	redisCluster    bool
	redisMasterName string
	redisUsername   string
	redisPassword   string
	redisTLS        bool
	dataDir         string

	namespace         string
	keyPrefix         string
	keyPrefixes       string // --key-prefixes-accepted
	hashKey           string
	hashKeys          string // --hash-keys: id:secret,…
	cacheTTL          time.Duration
	cacheMaxBytes     int64
	lastUsedFlush     time.Duration
	invalidationWait  time.Duration
	subscriptionStale time.Duration
	replicaWait       time.Duration

	logFormat string
	logLevel  string

	// tracing, when set (not a flag: OTEL_EXPORTER_OTLP_ENDPOINT),
	// traces Redis commands and verifications.
	tracing *sdktrace.TracerProvider
}

func (c *storeConfig) register(fs *flagSet) {
	c.registerConnection(fs)
	fs.StringVar(&c.keyPrefix, "key-prefix", "ak_", "prefix of every secret: letters, digits and _, ending in _")
	fs.StringVar(&c.keyPrefixes, "key-prefixes-accepted", "", "comma-separated earlier --key-prefix values whose secrets still verify (new keys get --key-prefix)")
	fs.StringVar(&c.hashKey, "hash-key", "", "HMAC key for secret digests (default: plain SHA-256); with --hash-keys, the key of the digests written before them")
	fs.StringVar(&c.hashKeys, "hash-keys", "", "named HMAC keys for secret digests, id:secret,…, the first current: keys digested under another verify and are re-digested under the first at their next verification")
	fs.DurationVar(&c.cacheTTL, "cache-ttl", 30*time.Second, "longest a verified key is served from memory; 0 reads Redis on every verification")
	fs.Int64Var(&c.cacheMaxBytes, "cache-max-bytes", 64<<20, "most memory, in bytes, the verifier's cache keeps alive (estimated per record)")
	fs.DurationVar(&c.lastUsedFlush, "last-used-flush", time.Second, "how often last-used times are written to Redis")
	fs.DurationVar(&c.invalidationWait, "invalidation-wait", 250*time.Millisecond, "how long revoke, update and delete wait for acknowledgements before naming the verifiers that did not answer (they are then waited for until their registrations lapse)")
	fs.DurationVar(&c.subscriptionStale, "subscription-stale", 2*time.Second, "longest a verifier's cache answers without a fresh proof that it missed no invalidation; also the longest a revoke waits for a verifier that does not answer")
	fs.DurationVar(&c.replicaWait, "replica-wait", 0, "how long revoke, update and delete wait for a replica to confirm (Redis WAIT), so a failover cannot undo them; 0 = no wait; set only where every master has a replica")
}

// registerConnection registers the flags that say where the data is: Redis,
// or the embedded store's directory, and the namespace; and the log's.
func (c *storeConfig) registerConnection(fs *flagSet) {
	fs.StringVar(&c.redisURL, "redis-url", "", "redis:// or rediss:// URL of a single Redis server")
	fs.StringVar(&c.redisAddrs, "redis-addrs", "", "comma-separated Redis addresses: a Cluster with --redis-cluster, Sentinels with --redis-master-name")
	fs.BoolVar(&c.redisCluster, "redis-cluster", false, "--redis-addrs are Redis Cluster nodes")
	fs.StringVar(&c.redisMasterName, "redis-master-name", "", "Sentinel master name; --redis-addrs are then the Sentinels")
	fs.StringVar(&c.redisUsername, "redis-username", "", "Redis ACL user (with --redis-addrs)")
	fs.StringVar(&c.redisPassword, "redis-password", "", "Redis password (with --redis-addrs)")
	fs.BoolVar(&c.redisTLS, "redis-tls", false, "use TLS to --redis-addrs (a rediss:// URL implies it)")
	fs.StringVar(&c.dataDir, "data-dir", "./keygate-data", "where the embedded store (used when no Redis is configured) keeps its data")
	fs.StringVar(&c.namespace, "namespace", "keygate", "prefix of every Redis key and channel")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: json or text")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

func (c *storeConfig) check() error {
	if err := c.checkConnection(); err != nil {
		return err
	}
	switch {
	case c.cacheTTL < 0:
		return usagef("--cache-ttl must not be negative")
	case c.cacheMaxBytes < 64<<10:
		return usagef("--cache-max-bytes must be at least 65536")
	case c.lastUsedFlush <= 0:
		return usagef("--last-used-flush must be positive")
	case c.invalidationWait <= 0:
		return usagef("--invalidation-wait must be positive")
	case c.replicaWait < 0:
		return usagef("--replica-wait must not be negative")
	case c.subscriptionStale <= 0:
		return usagef("--subscription-stale must be positive")
	case !keystore.ValidPrefix(c.keyPrefix):
		return usagef("--key-prefix %q must be letters, digits and _, ending in _, at most 32 characters", c.keyPrefix)
	case c.badHashKeys() != nil:
		return usagef("--hash-keys: %v", c.badHashKeys())
	case c.badAcceptedPrefix() != "":
		return usagef("--key-prefixes-accepted: %q must be letters, digits and _, ending in _, at most 32 characters", c.badAcceptedPrefix())
	}
	return nil
}

// checkConnection checks the flags of registerConnection.
func (c *storeConfig) checkConnection() error {
	switch {
	case c.redisURL != "" && c.redisAddrs != "":
		return usagef("--redis-url and --redis-addrs are exclusive: give one")
	case c.redisCluster && c.redisAddrs == "":
		return usagef("--redis-cluster needs --redis-addrs")
	case c.redisMasterName != "" && c.redisAddrs == "":
		return usagef("--redis-master-name needs --redis-addrs (the Sentinels)")
	case c.redisCluster && c.redisMasterName != "":
		return usagef("--redis-cluster and --redis-master-name are exclusive")
	case c.namespace == "" || strings.ContainsAny(c.namespace, " \t\r\n"):
		return usagef("--namespace must be non-empty and hold no white space")
	case c.logFormat != "json" && c.logFormat != "text":
		return usagef("--log-format must be json or text, not %q", c.logFormat)
	}
	if c.redisURL != "" {
		if _, err := redis.ParseURL(c.redisURL); err != nil {
			return usagef("--redis-url: %v", redactURL(err.Error(), c.redisURL))
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return usagef("--log-level must be debug, info, warn or error, not %q", c.logLevel)
	}
	return nil
}

// badAcceptedPrefix returns the first entry of --key-prefixes-accepted
// that cannot be a prefix, or "".
func (c *storeConfig) badAcceptedPrefix() string {
	for _, p := range splitList(c.keyPrefixes) {
		if !keystore.ValidPrefix(p) {
			return p
		}
	}
	return ""
}

// parseHashKeys reads --hash-keys. Its errors never hold a secret.
func (c *storeConfig) parseHashKeys() ([]keystore.HashKey, error) {
	var out []keystore.HashKey
	seen := map[string]bool{}
	for i, entry := range splitList(c.hashKeys) {
		id, secret, ok := strings.Cut(entry, ":")
		switch {
		case !ok || secret == "":
			return nil, fmt.Errorf("entry %d must be id:secret", i+1)
		case !keystore.ValidHashKeyID(id):
			return nil, fmt.Errorf("entry %d: the id must be letters, digits, '.', '_' and '-', at most 32, and not sha256", i+1)
		case seen[id]:
			return nil, fmt.Errorf("the id %q is given twice", id)
		}
		seen[id] = true
		out = append(out, keystore.HashKey{ID: id, Secret: []byte(secret)})
	}
	return out, nil
}

func (c *storeConfig) badHashKeys() error {
	_, err := c.parseHashKeys()
	return err
}

// redactURL keeps a Redis URL's password out of an error message.
func redactURL(msg, url string) string {
	if url == "" {
		return msg
	}
	return strings.ReplaceAll(msg, url, "<redis-url>")
}

func (c *storeConfig) logger(w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(c.logLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// backend is what a command runs on: Redis (or the embedded store), the key
// store and its verifier, and a metrics registry of the program's own.
type backend struct {
	rdb      redis.UniversalClient
	embedded *embedded.Store // nil with a real Redis
	store    *keystore.Store
	verifier *keystore.Verifier
	registry *prometheus.Registry
	logger   *slog.Logger
	closing  sync.Once
	stops    []func() // background work to end before the store closes
}

// open connects to Redis as configured, or starts the embedded store when
// none is, and builds the store and verifier on it.
func (c *storeConfig) open(logger *slog.Logger, allowEmbedded bool) (*backend, error) {
	b := &backend{registry: prometheus.NewRegistry(), logger: logger}
	b.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var err error
	b.rdb, b.embedded, err = c.connect(logger, allowEmbedded)
	if err != nil {
		return nil, err
	}
	if b.embedded != nil {
		logger.Warn("no Redis configured: using the embedded store, for ONE instance only; set KEYGATE_REDIS_URL for production", "data_dir", c.dataDir)
	}
	instrumentRedis(b.rdb, c.tracing, logger)
	hashKeys, _ := c.parseHashKeys() // checked
	store, err := keystore.New(b.rdb, keystore.Options{
		Namespace:           c.namespace,
		KeyPrefix:           c.keyPrefix,
		AcceptedKeyPrefixes: splitList(c.keyPrefixes),
		HashKey:             []byte(c.hashKey),
		HashKeys:            hashKeys,
		LastUsedFlush:       c.lastUsedFlush,
		ReplicaWait:         c.replicaWait,
		Logger:              logger,
		Registerer:          b.registry,
	})
	if err != nil {
		b.Close()
		return nil, usagef("--key-prefix: %v", err)
	}
	b.store = store
	ttl := c.cacheTTL
	if ttl == 0 {
		ttl = -1 // the flag's 0 means no cache; the option's 0 means the default
	}
	b.verifier, err = keystore.NewVerifier(store, keystore.VerifierOptions{
		CacheTTL:          ttl,
		CacheMaxBytes:     c.cacheMaxBytes,
		InvalidationWait:  c.invalidationWait,
		SubscriptionStale: c.subscriptionStale,
		Registerer:        b.registry,
		Logger:            logger,
		CreditsExhausted:  webhook.CreditsExhausted(b.rdb, c.namespace, logger, nil),
		Tracer:            verifierTracer(c.tracing),
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// connect returns a client of the configured Redis, or opens the embedded
// store in the data directory when none is configured (e is then the
// store, and the client is its own).
func (c *storeConfig) connect(logger *slog.Logger, allowEmbedded bool) (rdb redis.UniversalClient, e *embedded.Store, err error) {
	switch {
	case c.redisURL != "":
		opts, _ := redis.ParseURL(c.redisURL)
		failFast(&opts.MaxRetries, &opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout)
		return redis.NewClient(opts), nil, nil
	case c.redisAddrs != "":
		opts := &redis.UniversalOptions{
			Addrs:         splitList(c.redisAddrs),
			MasterName:    c.redisMasterName,
			Username:      c.redisUsername,
			Password:      c.redisPassword,
			IsClusterMode: c.redisCluster,
		}
		if c.redisTLS {
			opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		failFast(&opts.MaxRetries, &opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout)
		return redis.NewUniversalClient(opts), nil, nil
	case allowEmbedded:
		e, err := embedded.Open(c.dataDir, embedded.Options{
			Ephemeral: c.ephemeral,
			Logger:    logger,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("--data-dir %s: %w", c.dataDir, err)
		}
		return e.Client(), e, nil
	}
	return nil, nil, usagef("no Redis configured: set --redis-url or --redis-addrs")
}

// ephemeral reports the keys of the namespace that need not be kept or
// copied: the verifiers recreate them.
func (c *storeConfig) ephemeral(key string) bool { return keystore.IsEphemeral(c.namespace, key) }

// failFast bounds how long a request waits on an unreachable Redis, so that
// verifications answer 503 within about two seconds instead of hanging.
func failFast(retries *int, dial, read, write *time.Duration) {
	*retries = 1
	*dial, *read, *write = time.Second, time.Second, time.Second
}

// Close stops the verifier, flushes last-used times, and closes Redis (or
// saves and stops the embedded store).
func (b *backend) Close() { b.closing.Do(b.close) }

func (b *backend) close() {
	for _, stop := range b.stops {
		stop()
	}
	if b.verifier != nil {
		b.verifier.Close()
	}
	if b.store != nil {
		if err := b.store.Close(); err != nil {
			b.logger.Error("flushing last-used times at shutdown", "err", err)
		}
	}
	if b.embedded != nil {
		if err := b.embedded.Close(); err != nil {
			b.logger.Error("saving the embedded store", "err", err)
		}
		return
	}
	if b.rdb != nil {
		b.rdb.Close()
	}
}

// ping checks Redis once at start, so that a wrong address is one clear line.
func (b *backend) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return b.rdb.Ping(ctx).Err()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
