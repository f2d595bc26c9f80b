// Command benchcmd measures keygate against baselines measured in the same
// run, on loopback only, and prints one markdown table:
//
//	go run ./internal/benchcmd                        # everything, under 2 minutes on 2 cores
//	go run ./internal/benchcmd -out BENCHMARKS.md     # also writes the table there
//	go run ./internal/benchcmd -only 'verify|revoke'  # some measures only
//	go run ./internal/benchcmd -only embedded -out BENCHMARKS.md  # the embedded store's rows, merged into the file
//	go run ./internal/benchcmd -scale -out BENCHMARKS.md  # make bench-scale: a million keys
//
// With -out, each mode replaces only its own section of the file, so that
// make bench and make bench-scale keep each other's tables.
// It starts its own redis-server (and nginx, for forward-auth) on free
// loopback ports, and stops them when it is done. Every measure runs -runs
// times, keygate and its baseline taking turns, and the table quotes
// medians: these machines are small and shared, so the ratios to a
// baseline of the same run matter more than absolute times. Every loop is
// bounded by a count or a duration.
//
// It needs redis-server and redis-benchmark on PATH, and nginx (on PATH or
// in /usr/sbin) for the forward-auth row; a measure whose tool is missing
// is reported as not run, and the command exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// config is the command line.
type config struct {
	out        string
	only       *regexp.Regexp
	runs       int           // runs of every measure; medians are quoted
	benchtime  time.Duration // of each in-process benchmark run
	round      time.Duration // of each HTTP load round, per target
	conns      int           // HTTP load connections
	redisConns int           // connections of the uncached verify and redis-benchmark
	keys       int           // keys stored for the memory and list rows
	cpuprofile string

	loadAtStart string // the machine's load average when the run began

	scale     bool          // the measures of make bench-scale instead
	scaleKeys int           // keys of the bench-scale data set
	coldStart time.Duration // of the cold-start load
}

// measure is one row of the table, or several.
type measure struct {
	name string // for -only
	run  func(ctx context.Context, env *env) ([]row, error)
}

var measures = []measure{
	{"verify", cachedVerify},
	{"http", httpMiddleware},
	{"echo", echoMiddleware},
	{"uncached", uncachedVerify},
	{"sidecar", sidecarLoad},
	{"forward-auth", forwardAuthLoad},
	{"ext-authz", extAuthzLoad},
	{"tracing", tracingCost},
	{"revoke", revokeLatency},
	{"revoke-fleet", revokeFleet},
	{"revoke-frozen", revokeFrozen},
	{"last-used", lastUsedWrites},
	{"usage", usageControl},
	{"memory", memoryAndList},
	{"embedded", embeddedStore},
}

func main() {
	fs := flag.NewFlagSet("benchcmd", flag.ExitOnError)
	var c config
	var only string
	fs.StringVar(&c.out, "out", "", "also write the table, as markdown, to this file")
	fs.StringVar(&only, "only", "", "run only the measures whose name matches this regexp: "+names())
	fs.IntVar(&c.runs, "runs", 5, "runs of every measure (1-20); the table quotes medians")
	fs.DurationVar(&c.benchtime, "benchtime", 300*time.Millisecond, "duration of each in-process benchmark run")
	fs.DurationVar(&c.round, "round", 2*time.Second, "duration of each HTTP load round, per target")
	fs.IntVar(&c.conns, "conns", 16, "concurrent keep-alive connections of the HTTP load")
	fs.IntVar(&c.redisConns, "redis-conns", 32, "connections of the uncached verify and of redis-benchmark")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run (keygate, baselines and load generators) to this file")
	fs.IntVar(&c.keys, "keys", 100_000, "keys stored for the memory row (10,000 of them, at most, under one subject for the list row)")
	fs.BoolVar(&c.scale, "scale", false, "run the measures of make bench-scale instead: "+scaleNames())
	fs.IntVar(&c.scaleKeys, "scale-keys", 1_000_000, "keys of the bench-scale data set (a tenth of them, at most 100,000, under one subject)")
	fs.DurationVar(&c.coldStart, "cold-start", 20*time.Second, "duration of the bench-scale cold-start load")
	fs.Parse(os.Args[1:])
	if c.runs < 1 || c.runs > 20 || c.conns < 1 || c.conns > 512 || c.redisConns < 1 || c.redisConns > 512 ||
		c.keys < 1000 || c.keys > 1_000_000 || c.round < 100*time.Millisecond || c.round > time.Minute ||
		c.benchtime < 10*time.Millisecond || c.benchtime > 10*time.Second ||
		c.scaleKeys < 20_000 || c.scaleKeys > 5_000_000 || c.coldStart < 2*time.Second || c.coldStart > 5*time.Minute {
		fmt.Fprintln(os.Stderr, "benchcmd: -runs 1..20, -conns and -redis-conns 1..512, -keys 1000..1000000, -round 100ms..1m, -benchtime 10ms..10s, "+
			"-scale-keys 20000..5000000, -cold-start 2s..5m")
		os.Exit(2)
	}
	re, err := regexp.Compile(only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchcmd: -only:", err)
		os.Exit(2)
	}
	c.only = re
	// Background warnings (a slow acknowledgement, say) go to stderr; the
	// table goes to stdout.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	testing.Init()
	flag.CommandLine.Set("test.benchtime", c.benchtime.String())

	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "benchcmd:", err)
		os.Exit(1)
	}
}

func names() string { return measureNames(measures) }

func scaleNames() string { return measureNames(scaleMeasures) }

func measureNames(ms []measure) string {
	var n []string
	for _, m := range ms {
		n = append(n, m.name)
	}
	return strings.Join(n, ", ")
}

func run(c config) error {
	start := time.Now()
	c.loadAtStart = loadAverage()
	ctx := context.Background()
	if c.cpuprofile != "" {
		f, err := os.Create(c.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	env, err := newEnv(c)
	if err != nil {
		return err
	}
	defer env.close()

	var rows []row
	failed := 0
	list := measures
	if c.scale {
		list = scaleMeasures
	}
	for _, m := range list {
		if !c.only.MatchString(m.name) && !(c.scale && m.name == "build") {
			continue
		}
		progress("%s…", m.name)
		t0 := time.Now()
		rs, err := m.run(ctx, env)
		if err != nil {
			failed++
			progress("%s: %v", m.name, err)
			rows = append(rows, row{measure: m.name, keygate: "not run: " + err.Error()})
			continue
		}
		progress("%s: done in %s", m.name, time.Since(t0).Round(100*time.Millisecond))
		rows = append(rows, rs...)
	}

	table := render(env.machine, c, rows, time.Since(start))
	fmt.Print(table)
	if c.out != "" {
		if old, err := os.ReadFile(c.out); err == nil && c.only.String() != "" {
			// Some measures only: their rows replace or join those of the
			// file's section of this mode.
			begin, end := benchBegin, benchEnd
			if c.scale {
				begin, end = scaleBegin, scaleEnd
			}
			if sec := section(string(old), begin, end, ""); sec != "" {
				table = merge(sec, env.machine, c, rows, time.Since(start))
			}
		}
		if err := writeSection(c.out, c.scale, table); err != nil {
			return err
		}
		progress("wrote %s", c.out)
	}
	if failed > 0 {
		return fmt.Errorf("%d measures did not run", failed)
	}
	return nil
}

// progress tells stderr how far the run is.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// machine describes where the run happened, for the table's header.
func machine(redisVersion, nginxVersion string) string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s/%s, %d cores (%s), GOMAXPROCS %d, %s, %s, %s",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpu, runtime.GOMAXPROCS(0), runtime.Version(), redisVersion, nginxVersion)
}
