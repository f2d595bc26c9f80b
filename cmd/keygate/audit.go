package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/client"
	"github.com/keygate/keygate/keystore/webhook"
)

// auditConfig are serve's flags of named admin tokens, the audit log and
// webhooks.
type auditConfig struct {
	tokensFile     string
	retention      time.Duration
	webhookURLs    string
	webhookSecret  string
	webhookTimeout time.Duration
}

func (c *auditConfig) register(fs *flagSet) {
	fs.StringVar(&c.tokensFile, "admin-tokens-file", "", "file of named admin tokens with roles, one \"NAME ROLE TOKEN\" a line (roles: admin, manage, read, verify)")
	fs.DurationVar(&c.retention, "audit-retention", audit.DefaultRetention, "how long audit events are kept")
	fs.StringVar(&c.webhookURLs, "webhook-urls", "", "comma-separated URLs that receive every audit event, api_key.expiring and api_key.credits_exhausted (Standard Webhooks)")
	fs.StringVar(&c.webhookSecret, "webhook-secret", "", "secret that signs webhooks: whsec_ and the base64 of at least 24 random bytes (required with --webhook-urls)")
	fs.DurationVar(&c.webhookTimeout, "webhook-timeout", 10*time.Second, "how long one webhook attempt may take; a worker that dies leaves its delivery to another after twice that")
}

// check checks the flags and reads the token file.
func (c *auditConfig) check() ([]adminapi.Token, error) {
	switch {
	case c.retention < time.Hour:
		return nil, usagef("--audit-retention must be at least 1h")
	case c.webhookTimeout <= 0:
		return nil, usagef("--webhook-timeout must be positive")
	case c.webhookURLs != "" && c.webhookSecret == "":
		return nil, usagef("--webhook-secret (KEYGATE_WEBHOOK_SECRET) is required with --webhook-urls")
	}
	if err := webhook.CheckURLs(splitList(c.webhookURLs)); err != nil {
		return nil, usagef("--webhook-urls: %v", err)
	}
	if c.webhookSecret != "" {
		if _, err := webhook.NewSigner(c.webhookSecret); err != nil {
			return nil, usagef("--webhook-secret: %v", err)
		}
	}
	if c.tokensFile == "" {
		return nil, nil
	}
	f, err := os.Open(c.tokensFile)
	if err != nil {
		return nil, usagef("--admin-tokens-file: %v", err)
	}
	defer f.Close()
	tokens, err := adminapi.ParseTokenFile(f)
	if err != nil {
		return nil, usagef("--admin-tokens-file %s: %v", c.tokensFile, err)
	}
	if err := adminapi.CheckTokens(tokens); err != nil {
		return nil, usagef("--admin-tokens-file %s: %v", c.tokensFile, err)
	}
	return tokens, nil
}

// start opens the audit log on b and, with webhook URLs, starts a
// dispatcher; stop ends it.
func (c *auditConfig) start(b *backend, cfg *storeConfig, logger *slog.Logger) (*audit.Log, func(), error) {
	log := audit.New(b.rdb, audit.Options{Namespace: cfg.namespace, Retention: c.retention})
	if c.webhookURLs == "" {
		return log, func() {}, nil
	}
	d, err := webhook.New(b.rdb, webhook.Options{
		URLs:       splitList(c.webhookURLs),
		Secret:     c.webhookSecret,
		Namespace:  cfg.namespace,
		Audit:      log,
		Store:      b.store,
		Timeout:    c.webhookTimeout,
		Logger:     logger,
		Registerer: b.registry,
	})
	if err != nil {
		return nil, nil, usagef("--webhook-urls: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	return log, func() { cancel(); <-done }, nil
}

const auditSynopsis = `keygate audit [--key-id ID] [--subject S] [--action A] [--actor NAME] [--limit N] [--starting-after ID] [--json]

Lists audit events, newest first: who changed which key, when, from where,
and the fields before and after. Actions: api_key.created, .updated,
.enabled, .disabled, .rolled, .revoked, .bulk_revoked, .deleted, .imported.
It calls the admin API as the keys commands do (KEYGATE_URL,
KEYGATE_ADMIN_TOKEN); a token of any role but verify may read it.`

func auditCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := newFlagSet("keygate audit", auditSynopsis, io.Discard)
	var f client.AuditFilter
	fs.StringVar(&f.APIKeyID, "key-id", "", "only events of this key")
	fs.StringVar(&f.Subject, "subject", "", "only events of this subject's keys")
	fs.StringVar(&f.Action, "action", "", "only this action, e.g. api_key.revoked")
	fs.StringVar(&f.Actor, "actor", "", "only events made with this admin token name")
	fs.IntVar(&f.Limit, "limit", 20, "events per page, 1 to 100")
	fs.StringVar(&f.StartingAfter, "starting-after", "", "the next page: events older than this event ID")
	cmd := keysCommand{fs: fs, run: func(ctx context.Context, c *client.Client, _ string, out *output) error {
		page, err := c.AuditEvents(ctx, f)
		if err != nil {
			return err
		}
		return out.audit(page)
	}}
	if len(args) > 0 && args[0] == "help" {
		args = []string{"--help"}
	}
	return runClientCommand("keygate", "audit", cmd, args, stdout, stderr, getenv)
}

// audit prints events as a table: time, actor, action, key, and the
// changed fields as name: from → to.
func (o *output) audit(p *audit.Page) error {
	if o.json {
		return o.printJSON(p)
	}
	tw := tabwriter.NewWriter(o.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tACTION\tKEY\tSUBJECT\tFROM\tCHANGES")
	for _, e := range p.Data {
		var changes []string
		for _, name := range slices.Sorted(maps.Keys(e.Changes)) {
			ch := e.Changes[name]
			changes = append(changes, fmt.Sprintf("%s: %s → %s", name, ch.From, ch.To))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", time.UnixMilli(e.Time).UTC().Format(time.RFC3339),
			e.Actor.Name, e.Action, e.APIKeyID, e.Subject, e.RemoteAddr, strings.Join(changes, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p.HasMore && len(p.Data) > 0 {
		fmt.Fprintf(o.w, "more: --starting-after %s\n", p.Data[len(p.Data)-1].ID)
	}
	return nil
}
