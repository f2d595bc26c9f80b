package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/client"
)

const keysSynopsis = `keygate keys COMMAND [flags]

Commands:
  create --name N --subject S [--scopes a,b] [--expires-in 720h] [--description D] [--claims JSON]
         [--rate-limit NAME=LIMIT/DURATION]... [--credits N [--refill day:N|month:N[:DAY]]] [--allowed-cidrs C,…]
  list [--subject S] [--query Q] [--include-invalid] [--limit N] [--offset N]
  get ID
  update ID [--name N] [--description D] [--scopes a,b] [--claims JSON] [--expires-in D | --never-expires]
         [--rate-limit NAME=LIMIT/DURATION]... [--no-rate-limits] [--credits N [--refill …]] [--no-credits]
         [--allowed-cidrs C,… | --any-address]
  roll ID [--grace 24h]   (a new key and secret; the old one verifies for the grace, 0 revokes it now)
  disable ID
  enable ID
  revoke ID [--reason R]
  revoke-all --subject S [--reason R]   (every key of the subject)
  import FILE   (JSON lines, or "-" for standard input: a create body and "hash":{"algorithm":"sha256","value":HEX})
  delete ID
  verify SECRET   (or "-" to read the secret from standard input, out of shell history)
  usage ID [--granularity minute|hour|day] [--since 24h]   (a bar chart of its verifications)

They call the admin API at --url (KEYGATE_URL, default http://127.0.0.1:8080)
with --admin-token (KEYGATE_ADMIN_TOKEN; default: the token the embedded store
saved in KEYGATE_DATA_DIR, ./keygate-data). --json prints the API's JSON.
Exit status: 0 success (a valid key for verify), 1 refused or invalid key,
2 usage error, 3 server unreachable or 5xx.`

// keysCommand is one "keygate keys" subcommand.
type keysCommand struct {
	fs      *flagSet
	args    int // positional arguments it takes (0 or 1)
	argName string
	run     func(ctx context.Context, c *client.Client, arg string, out *output) error
	// long commands (import) have no overall deadline: each call has
	// the client's.
	long bool
}

func keys(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stderr, keysSynopsis)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	name := args[0]
	cmd, ok := keysCommands(stdin)[name]
	if !ok {
		fmt.Fprintf(stderr, "keygate keys: unknown command %q\n\n%s\n", name, keysSynopsis)
		return exitUsage
	}
	return runClientCommand("keygate keys", name, cmd, args[1:], stdout, stderr, getenv)
}

// runClientCommand runs cmd, named "prog name" in messages, against the
// admin API: it adds the flags every such command has (--url,
// --admin-token, --data-dir, --json), parses args and calls cmd.run.
func runClientCommand(prog, name string, cmd keysCommand, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := cmd.fs
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "base URL of keygate serve")
	token := fs.String("admin-token", "", "admin bearer token")
	dataDir := fs.String("data-dir", "./keygate-data", "where to find the embedded store's admin token when --admin-token is unset")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	fs.envOnly = map[string]bool{"url": true, "admin-token": true, "data-dir": true}

	positional, err := parseInterleaved(fs, args, getenv)
	if err != nil {
		if errors.Is(err, errHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if len(positional) != cmd.args {
		if cmd.args == 0 {
			fmt.Fprintf(stderr, "%s %s: unexpected argument %q\n", prog, name, positional[0])
		} else {
			fmt.Fprintf(stderr, "%s %s: want exactly one %s\n", prog, name, cmd.argName)
		}
		return exitUsage
	}
	arg := ""
	if cmd.args == 1 {
		arg = positional[0]
	}
	if *token == "" {
		if b, err := os.ReadFile(filepath.Join(*dataDir, adminTokenFile)); err == nil {
			*token = strings.TrimSpace(string(b))
		}
	}
	if *token == "" {
		fmt.Fprintln(stderr, prog+": no admin token: set KEYGATE_ADMIN_TOKEN (or --admin-token)")
		return exitUsage
	}
	c, err := client.New(*url, *token)
	if err != nil {
		fmt.Fprintf(stderr, "%s: --url: %v\n", prog, err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if cmd.long {
		ctx, cancel = context.WithCancel(context.Background())
	}
	defer cancel()
	out := &output{w: stdout, errw: stderr, json: *asJSON}
	if err := cmd.run(ctx, c, arg, out); err != nil {
		fmt.Fprintf(stderr, "%s %s: %v\n", prog, name, err)
		return exitStatus(err)
	}
	return exitOK
}

// exitStatus maps a command's error to the exit statuses the README documents
// ("The admin API and Clerk's SDK"): 0 success, 1 refused, 2 usage, 3 unreachable.
func exitStatus(err error) int {
	var ue *usageError
	var ae *client.APIError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, keystore.ErrUnavailable):
		return exitUnreachable
	case errors.As(err, &ae) && ae.Status >= 500:
		return exitUnreachable
	}
	return exitRefused
}

// parseInterleaved parses flags that may stand before or after the
// positional arguments ("get ID --json" as well as "get --json ID").
func parseInterleaved(fs *flagSet, args []string, getenv func(string) string) ([]string, error) {
	var positional []string
	var flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case a == "-" || !strings.HasPrefix(a, "-"):
			positional = append(positional, a)
		default:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					i++
					flags = append(flags, args[i])
				}
			}
		}
	}
	if err := fs.parse(flags, getenv); err != nil {
		return nil, err
	}
	return positional, nil
}

func keysCommands(stdin io.Reader) map[string]keysCommand {
	cmds := map[string]keysCommand{}

	{
		fs := newFlagSet("keygate keys create", "keygate keys create --name N --subject S [flags]", io.Discard)
		name := fs.String("name", "", "name of the key (required)")
		subject := fs.String("subject", "", "user or organisation that owns the key (required)")
		scopes := fs.String("scopes", "", "comma-separated scopes")
		expiresIn := fs.Duration("expires-in", 0, "lifetime, e.g. 720h (default: never expires)")
		description := fs.String("description", "", "description")
		claims := fs.String("claims", "", "custom claims, a JSON object")
		createdBy := fs.String("created-by", "", "ID of the user creating the key")
		var limits rateLimitFlag
		fs.Var(&limits, "rate-limit", "a rate limit NAME=LIMIT/DURATION, e.g. default=100/1m (repeatable)")
		credits := fs.Int64("credits", -1, "credits the key starts with (default: unmetered)")
		refill := fs.String("refill", "", "credits refill INTERVAL:AMOUNT[:DAY], e.g. month:1000 or day:50")
		cidrs := fs.String("allowed-cidrs", "", "comma-separated IPv4/IPv6 CIDRs the key may be used from (default: any address)")
		cmds["create"] = keysCommand{fs: fs, run: func(ctx context.Context, c *client.Client, _ string, out *output) error {
			p := keystore.CreateParams{Name: *name, Subject: *subject, Scopes: splitList(*scopes), RateLimits: limits,
				AllowedCIDRs: splitList(*cidrs)}
			if err := givenCredits(fs, *credits); err != nil {
				return err
			}
			cr, err := creditsFlags(*credits, *refill)
			if err != nil {
				return err
			}
			p.Credits = cr
			if *description != "" {
				p.Description = description
			}
			if *createdBy != "" {
				p.CreatedBy = createdBy
			}
			if *claims != "" {
				p.Claims = json.RawMessage(*claims)
			}
			if *expiresIn != 0 {
				secs, err := seconds("--expires-in", *expiresIn)
				if err != nil {
					return err
				}
				p.SecondsUntilExpiration = &secs
			}
			k, err := c.Create(ctx, p)
			if err != nil {
				return err
			}
			return out.created(k)
		}}
	}
	{
		fs := newFlagSet("keygate keys list", "keygate keys list [flags]", io.Discard)
		subject := fs.String("subject", "", "only this subject's keys")
		query := fs.String("query", "", "only keys whose name contains this (case-insensitive)")
		invalid := fs.Bool("include-invalid", false, "include revoked and expired keys")
		limit := fs.Int("limit", 10, "keys per page, 1 to 100")
		offset := fs.Int("offset", 0, "keys to skip")
		cmds["list"] = keysCommand{fs: fs, run: func(ctx context.Context, c *client.Client, _ string, out *output) error {
			l, err := c.List(ctx, keystore.ListParams{Subject: *subject, Query: *query, IncludeInvalid: *invalid, Limit: *limit, Offset: *offset})
			if err != nil {
				return err
			}
			return out.list(l)
		}}
	}
	cmds["get"] = keysCommand{fs: newFlagSet("keygate keys get", "keygate keys get ID", io.Discard), args: 1, argName: "key ID",
		run: func(ctx context.Context, c *client.Client, id string, out *output) error {
			k, err := c.Get(ctx, id)
			if err != nil {
				return err
			}
			return out.key(k)
		}}
	{
		fs := newFlagSet("keygate keys update", "keygate keys update ID [flags]", io.Discard)
		description := fs.String("description", "", "new description")
		scopes := fs.String("scopes", "", "new comma-separated scopes")
		claims := fs.String("claims", "", "new claims, a JSON object (null clears them)")
		expiresIn := fs.Duration("expires-in", 0, "new lifetime from now, e.g. 720h")
		never := fs.Bool("never-expires", false, "remove the expiration")
		var limits rateLimitFlag
		fs.Var(&limits, "rate-limit", "a rate limit NAME=LIMIT/DURATION, e.g. default=100/1m (repeatable; replaces every limit)")
		noLimits := fs.Bool("no-rate-limits", false, "remove every rate limit")
		credits := fs.Int64("credits", -1, "set the credits left")
		refill := fs.String("refill", "", "credits refill INTERVAL:AMOUNT[:DAY], with --credits")
		noCredits := fs.Bool("no-credits", false, "remove the credits: the key is no longer metered")
		name := fs.String("name", "", "new name")
		cidrs := fs.String("allowed-cidrs", "", "comma-separated IPv4/IPv6 CIDRs the key may be used from (replaces them)")
		anyAddress := fs.Bool("any-address", false, "remove the allowed CIDRs: the key may be used from any address")
		cmds["update"] = keysCommand{fs: fs, args: 1, argName: "key ID", run: func(ctx context.Context, c *client.Client, id string, out *output) error {
			var p keystore.UpdateParams
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			if *noLimits && set["rate-limit"] {
				return usagef("--no-rate-limits and --rate-limit are exclusive")
			}
			if err := givenCredits(fs, *credits); err != nil {
				return err
			}
			if set["name"] {
				p.Name = name
			}
			switch {
			case *anyAddress:
				p.AllowedCIDRs = &[]string{}
			case set["allowed-cidrs"]:
				l := splitList(*cidrs)
				if len(l) == 0 {
					return usagef("--allowed-cidrs needs at least one CIDR; --any-address removes them")
				}
				p.AllowedCIDRs = &l
			}
			switch {
			case *noLimits:
				p.RateLimits = &[]keystore.RateLimit{}
			case set["rate-limit"]:
				l := []keystore.RateLimit(limits)
				p.RateLimits = &l
			}
			cr, err := creditsFlags(*credits, *refill)
			if err != nil {
				return err
			}
			p.Credits, p.NoCredits = cr, *noCredits
			if set["description"] {
				p.Description = description
			}
			if set["scopes"] {
				s := splitList(*scopes)
				if s == nil {
					s = []string{}
				}
				p.Scopes = &s
			}
			if set["claims"] {
				p.Claims = json.RawMessage(*claims)
			}
			if set["expires-in"] {
				secs, err := seconds("--expires-in", *expiresIn)
				if err != nil {
					return err
				}
				p.SecondsUntilExpiration = &secs
			}
			p.NeverExpires = *never
			k, err := c.Update(ctx, id, p)
			if err != nil {
				return err
			}
			return out.key(k)
		}}
	}
	{
		fs := newFlagSet("keygate keys revoke", "keygate keys revoke ID [--reason R]", io.Discard)
		reason := fs.String("reason", "", "why the key is revoked")
		cmds["revoke"] = keysCommand{fs: fs, args: 1, argName: "key ID", run: func(ctx context.Context, c *client.Client, id string, out *output) error {
			var r *string
			if *reason != "" {
				r = reason
			}
			k, err := c.Revoke(ctx, id, r)
			if err != nil {
				return err
			}
			return out.key(k)
		}}
	}
	{
		fs := newFlagSet("keygate keys roll", "keygate keys roll ID [--grace 24h]", io.Discard)
		grace := fs.Duration("grace", keystore.DefaultRollGrace, "how long the old key keeps verifying; 0 revokes it now")
		cmds["roll"] = keysCommand{fs: fs, args: 1, argName: "key ID", run: func(ctx context.Context, c *client.Client, id string, out *output) error {
			if *grace < 0 {
				return usagef("--grace must not be negative")
			}
			k, err := c.Roll(ctx, id, *grace)
			if err != nil {
				return err
			}
			return out.created(k)
		}}
	}
	for _, enable := range []bool{false, true} {
		name := map[bool]string{false: "disable", true: "enable"}[enable]
		cmds[name] = keysCommand{fs: newFlagSet("keygate keys "+name, "keygate keys "+name+" ID", io.Discard), args: 1, argName: "key ID",
			run: func(ctx context.Context, c *client.Client, id string, out *output) error {
				k, err := c.Update(ctx, id, keystore.UpdateParams{Enabled: &enable})
				if err != nil {
					return err
				}
				return out.key(k)
			}}
	}
	{
		fs := newFlagSet("keygate keys revoke-all", "keygate keys revoke-all --subject S [--reason R]", io.Discard)
		subject := fs.String("subject", "", "the subject whose every key is revoked (required)")
		reason := fs.String("reason", "", "why the keys are revoked")
		cmds["revoke-all"] = keysCommand{fs: fs, run: func(ctx context.Context, c *client.Client, _ string, out *output) error {
			if *subject == "" {
				return usagef("--subject is required")
			}
			var r *string
			if *reason != "" {
				r = reason
			}
			n, err := c.RevokeAll(ctx, *subject, r)
			if err != nil {
				return err
			}
			if out.json {
				return out.printJSON(map[string]any{"object": "bulk_revoke", "subject": *subject, "revoked": n})
			}
			fmt.Fprintf(out.w, "revoked %d keys of %s\n", n, *subject)
			return nil
		}}
	}
	cmds["import"] = keysCommand{fs: newFlagSet("keygate keys import", "keygate keys import FILE", io.Discard), args: 1, argName: `file of JSON lines (or "-" for standard input)`, long: true,
		run: func(ctx context.Context, c *client.Client, file string, out *output) error {
			in := stdin
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("%v", err)
				}
				defer f.Close()
				in = f
			}
			return importLines(ctx, c, in, out)
		}}
	{
		fs := newFlagSet("keygate keys usage", "keygate keys usage ID [--granularity hour] [--since 24h]", io.Discard)
		granularity := fs.String("granularity", "hour", "minute, hour or day")
		since := fs.Duration("since", 24*time.Hour, "how far back")
		cmds["usage"] = keysCommand{fs: fs, args: 1, argName: "key ID", run: func(ctx context.Context, c *client.Client, id string, out *output) error {
			end := time.Now()
			u, err := c.Usage(ctx, id, *granularity, end.Add(-*since), end)
			if err != nil {
				return err
			}
			return out.usage(u)
		}}
	}
	cmds["delete"] = keysCommand{fs: newFlagSet("keygate keys delete", "keygate keys delete ID", io.Discard), args: 1, argName: "key ID",
		run: func(ctx context.Context, c *client.Client, id string, out *output) error {
			if err := c.Delete(ctx, id); err != nil {
				return err
			}
			if out.json {
				return out.printJSON(map[string]any{"object": "api_key", "id": id, "deleted": true})
			}
			fmt.Fprintf(out.w, "deleted %s\n", id)
			return nil
		}}
	cmds["verify"] = keysCommand{fs: newFlagSet("keygate keys verify", "keygate keys verify SECRET|-", io.Discard), args: 1, argName: `secret (or "-" for standard input)`,
		run: func(ctx context.Context, c *client.Client, secret string, out *output) error {
			if secret == "-" {
				line, err := bufio.NewReader(stdin).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return usagef("reading the secret from standard input: %v", err)
				}
				secret = strings.TrimSpace(line)
			}
			k, err := c.Verify(ctx, secret)
			if err != nil {
				return err
			}
			if !out.json {
				fmt.Fprintln(out.w, "valid")
			}
			return out.key(k)
		}}
	return cmds
}

// importLines imports one key per line of in (blank lines skipped), and
// goes on past a line that fails: each failure is told on standard error
// with its line number, and the first one decides the exit status.
func importLines(ctx context.Context, c *client.Client, in io.Reader, out *output) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var first error
	imported, failed := 0, 0
	fail := func(line int, err error) {
		failed++
		fmt.Fprintf(out.errw, "line %d: %v\n", line, err)
		if first == nil {
			first = err
		}
	}
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var p keystore.ImportParams
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			fail(line, usagef("not an import body: %v", err))
			continue
		}
		k, err := c.Import(ctx, p)
		if err != nil {
			fail(line, err)
			if errors.Is(err, keystore.ErrUnavailable) {
				break // the server is gone: the rest would fail alike
			}
			continue
		}
		imported++
		if out.json {
			if err := json.NewEncoder(out.w).Encode(k); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(out.w, "%s\t%s\t%s\n", k.ID, k.Subject, k.Name)
		}
	}
	if err := sc.Err(); err != nil {
		return usagef("reading the keys: %v", err)
	}
	if !out.json {
		fmt.Fprintf(out.errw, "imported %d keys, %d failed\n", imported, failed)
	}
	if first != nil {
		return fmt.Errorf("%d of %d keys not imported; the first: %w", failed, imported+failed, first)
	}
	return nil
}

// seconds turns a lifetime flag into whole seconds, rounding up.
func seconds(flagName string, d time.Duration) (int64, error) {
	if d <= 0 {
		return 0, usagef("%s must be positive", flagName)
	}
	return int64(math.Ceil(d.Seconds())), nil
}

// output prints keys as tables, or as the API's JSON with --json.
type output struct {
	w    io.Writer
	errw io.Writer // what import tells of lines that failed
	json bool
}

func (o *output) printJSON(v any) error {
	enc := json.NewEncoder(o.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (o *output) created(k *keystore.APIKey) error {
	if o.json {
		return o.printJSON(k)
	}
	if err := o.key(k); err != nil {
		return err
	}
	fmt.Fprintf(o.w, "\nsecret (shown this once; store it now):\n\n    %s\n\n", k.Secret)
	return nil
}

func (o *output) key(k *keystore.APIKey) error {
	if o.json {
		return o.printJSON(k)
	}
	tw := tabwriter.NewWriter(o.w, 0, 4, 2, ' ', 0)
	row := func(name, value string) { fmt.Fprintf(tw, "%s\t%s\n", name, value) }
	row("id", k.ID)
	row("name", k.Name)
	row("subject", k.Subject)
	row("status", status(k))
	row("scopes", strings.Join(k.Scopes, " "))
	if len(k.AllowedCIDRs) > 0 {
		row("allowed from", strings.Join(k.AllowedCIDRs, " "))
	}
	if k.RolledFrom != nil {
		row("rolled from", *k.RolledFrom)
	}
	if k.RolledTo != nil {
		row("rolled to", *k.RolledTo)
	}
	if k.Description != nil {
		row("description", *k.Description)
	}
	if k.Claims != nil {
		row("claims", string(k.Claims))
	}
	row("created", formatTime(&k.CreatedAt))
	row("expires", formatTime(k.Expiration))
	row("last used", formatTime(k.LastUsedAt))
	for _, l := range k.RateLimits {
		row("rate limit", fmt.Sprintf("%s: %d per %s", l.Name, l.Limit, time.Duration(l.DurationMs)*time.Millisecond))
	}
	if cr := k.Credits; cr != nil {
		v := strconv.FormatInt(cr.Remaining, 10) + " left"
		if r := cr.Refill; r != nil {
			v += fmt.Sprintf(", refilled to %d every %s", r.Amount, r.Interval)
		}
		row("credits", v)
	}
	if k.RevocationReason != nil {
		row("revocation reason", *k.RevocationReason)
	}
	return tw.Flush()
}

// usage prints a key's history as a bar chart: one line a bucket, the bar
// of admitted requests (#) followed by that of refused ones (x), scaled to
// the busiest bucket.
func (o *output) usage(u *keystore.UsageHistory) error {
	if o.json {
		return o.printJSON(u)
	}
	const width = 50
	layout := "2006-01-02 15:04"
	if u.Granularity == "day" {
		layout = "2006-01-02"
	}
	var most int64
	totals := make([][2]int64, len(u.Data))
	for i, p := range u.Data {
		for j, n := range p.Counts {
			if j == 0 {
				totals[i][0] += n
			} else {
				totals[i][1] += n
			}
		}
		most = max(most, totals[i][0]+totals[i][1])
	}
	fmt.Fprintf(o.w, "%s, per %s: # admitted, x refused\n", u.ID, u.Granularity)
	for i, p := range u.Data {
		ok, refused := totals[i][0], totals[i][1]
		bar := ""
		if most > 0 {
			a := int((ok*width + most - 1) / most)
			r := int((refused*width + most - 1) / most)
			bar = strings.Repeat("#", a) + strings.Repeat("x", r)
		}
		fmt.Fprintf(o.w, "%s  %-*s %d", time.UnixMilli(p.T).UTC().Format(layout), width, bar, ok)
		if refused > 0 {
			fmt.Fprintf(o.w, " (+%d refused)", refused)
		}
		fmt.Fprintln(o.w)
	}
	return nil
}

func (o *output) list(l *keystore.KeyList) error {
	if o.json {
		return o.printJSON(l)
	}
	tw := tabwriter.NewWriter(o.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSUBJECT\tSTATUS\tSCOPES\tEXPIRES\tLAST USED")
	for _, k := range l.Data {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Subject, status(k),
			strings.Join(k.Scopes, " "), formatTime(k.Expiration), formatTime(k.LastUsedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(o.w, "%d of %d\n", len(l.Data), l.TotalCount)
	return nil
}

func status(k *keystore.APIKey) string {
	switch {
	case k.Revoked:
		return "revoked"
	case !k.Enabled:
		return "disabled"
	case k.Expired:
		return "expired"
	}
	return "active"
}

func formatTime(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return time.UnixMilli(*ms).UTC().Format(time.RFC3339)
}

// rateLimitFlag collects --rate-limit NAME=LIMIT/DURATION values.
type rateLimitFlag []keystore.RateLimit

func (f *rateLimitFlag) String() string { return "" }

func (f *rateLimitFlag) Set(v string) error {
	name, rest, ok1 := strings.Cut(v, "=")
	limit, dur, ok2 := strings.Cut(rest, "/")
	n, err := strconv.ParseInt(limit, 10, 64)
	if !ok1 || !ok2 || err != nil {
		return fmt.Errorf("want NAME=LIMIT/DURATION, e.g. default=100/1m")
	}
	d, err := time.ParseDuration(dur)
	if err != nil {
		if d, err = time.ParseDuration("1" + dur); err != nil { // "100/s"
			return fmt.Errorf("bad duration %q: want e.g. 1m, 10s, 1h", dur)
		}
	}
	*f = append(*f, keystore.RateLimit{Name: name, Limit: n, DurationMs: d.Milliseconds()})
	return nil
}

// givenCredits refuses a --credits given below 0 (its default, -1, means
// not given).
func givenCredits(fs *flagSet, credits int64) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "credits" })
	if given && credits < 0 {
		return usagef("--credits must be 0 or more")
	}
	return nil
}

// creditsFlags turns --credits and --refill into credits; nil when
// --credits is not given.
func creditsFlags(remaining int64, refill string) (*keystore.Credits, error) {
	if remaining < 0 {
		if refill != "" {
			return nil, usagef("--refill needs --credits")
		}
		return nil, nil
	}
	c := &keystore.Credits{Remaining: remaining}
	if refill != "" {
		f := strings.Split(refill, ":")
		amount, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if len(f) == 3 {
			amount, err = strconv.ParseInt(f[1], 10, 64)
		}
		if len(f) < 2 || len(f) > 3 || err != nil {
			return nil, usagef("--refill wants INTERVAL:AMOUNT[:DAY], e.g. month:1000 or day:50")
		}
		c.Refill = &keystore.Refill{Interval: f[0], Amount: amount}
		if len(f) == 3 {
			if c.Refill.DayOfMonth, err = strconv.Atoi(f[2]); err != nil {
				return nil, usagef("--refill's DAY must be a day of the month")
			}
		}
	}
	return c, nil
}
