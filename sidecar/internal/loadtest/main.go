// Command loadtest measures the sidecar's cost against a bare reverse proxy,
// side by side in one run, on loopback only:
//
//	go run ./sidecar/internal/loadtest            # defaults: -n 20000 -c 16 -rounds 3
//
// Three targets serve the same upstream: the upstream direct, a bare
// httputil.ReverseProxy (same transport and flush settings as the sidecar,
// no auth), and the keygate sidecar verifying one key on every request
// (cached after the first). Every target gets the same request, the key
// included. Targets take turns for -rounds rounds of -n
// requests from -c concurrent keep-alive clients, after a warm-up, so that
// drift in the machine's load hits all three alike. It prints requests/s,
// p50 and p99 per target and the throughput ratios; the goal is a sidecar
// at 85% or more of the bare proxy.
//
// Redis is a redis-server child process on a free loopback port when
// redis-server is on PATH, else an in-process miniredis.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
)

func main() {
	n := flag.Int("n", 20000, "requests per target per round")
	c := flag.Int("c", 16, "concurrent clients")
	rounds := flag.Int("rounds", 3, "rounds; targets take turns within each")
	warmup := flag.Int("warmup", 2000, "warm-up requests per target, not measured")
	flag.Parse()
	if *n < 1 || *c < 1 || *rounds < 1 || *n > 10_000_000 || *c > 1024 || *rounds > 100 {
		fmt.Fprintln(os.Stderr, "loadtest: -n 1..10000000, -c 1..1024, -rounds 1..100")
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := run(*n, *c, *rounds, *warmup); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

type target struct {
	name   string
	url    string
	header http.Header
	lat    []time.Duration
	took   time.Duration
	errs   int
}

func run(n, c, rounds, warmup int) error {
	rdb, redisKind, stop, err := startRedis()
	if err != nil {
		return err
	}
	defer stop()
	ctx := context.Background()
	store, err := keystore.New(rdb, keystore.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	v, err := keystore.NewVerifier(store, keystore.VerifierOptions{})
	if err != nil {
		return err
	}
	defer v.Close()
	key, err := store.Create(ctx, keystore.CreateParams{Name: "load", Subject: "user_load", Scopes: []string{"load:run"}})
	if err != nil {
		return err
	}

	up := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"ok":true}`)
	}), false)
	upURL, _ := url.Parse(up)
	bare := serve(&httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(upURL); pr.Out.Host = pr.In.Host; pr.SetXForwarded() },
		Transport:     sidecar.NewTransport(),
		FlushInterval: -1,
		BufferPool:    bufferPool{},
	}, true)
	px, err := sidecar.NewProxy(v, sidecar.ProxyOptions{Upstream: upURL})
	if err != nil {
		return err
	}
	sc := serve(px, true)

	auth := http.Header{"Authorization": {"Bearer " + key.Secret}}
	// Every target gets the same request, key included.
	targets := []*target{
		{name: "direct", url: up + "/x", header: auth},
		{name: "bare proxy", url: bare + "/x", header: auth},
		{name: "sidecar", url: sc + "/x", header: auth},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c, MaxConnsPerHost: c, IdleConnTimeout: time.Minute}}
	// The sidecar must answer 200 before anything is measured.
	for _, t := range targets {
		if err := get(client, t.url, t.header); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		load(client, t, warmup, c, false)
	}
	for round := 0; round < rounds; round++ {
		for _, t := range targets {
			load(client, t, n, c, true)
		}
	}

	fmt.Printf("loopback, GOMAXPROCS=%s, %d clients, %d rounds of %d requests per target, redis: %s\n\n",
		strconv.Itoa(runtime.GOMAXPROCS(0)), c, rounds, n, redisKind)
	fmt.Printf("%-12s %10s %10s %10s %8s\n", "target", "req/s", "p50", "p99", "errors")
	rps := map[string]float64{}
	for _, t := range targets {
		slices.Sort(t.lat)
		rps[t.name] = float64(len(t.lat)) / t.took.Seconds()
		fmt.Printf("%-12s %10.0f %10s %10s %8d\n", t.name, rps[t.name], pct(t.lat, 0.50), pct(t.lat, 0.99), t.errs)
	}
	ratio := rps["sidecar"] / rps["bare proxy"]
	fmt.Printf("\nbare proxy / direct: %.2f\nsidecar / direct:    %.2f\nsidecar / bare proxy: %.2f (goal >= 0.85: %s)\n",
		rps["bare proxy"]/rps["direct"], rps["sidecar"]/rps["direct"], ratio, map[bool]string{true: "met", false: "missed"}[ratio >= 0.85])
	for _, t := range targets {
		if t.errs > 0 {
			return fmt.Errorf("%s: %d failed requests", t.name, t.errs)
		}
	}
	return nil
}

// load sends n requests to t from c workers and, when record is set, adds
// their latencies and the wall time to t.
func load(client *http.Client, t *target, n, c int, record bool) {
	lat := make([]time.Duration, n)
	failed := make([]bool, n)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				j := i
				i++
				next.Unlock()
				if j >= n {
					return
				}
				t0 := time.Now()
				failed[j] = get(client, t.url, t.header) != nil
				lat[j] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	if !record {
		return
	}
	t.took += time.Since(start)
	for j := range lat {
		if failed[j] {
			t.errs++
			continue
		}
		t.lat = append(t.lat, lat[j])
	}
}

func get(client *http.Client, u string, h http.Header) error {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return err
	}
	req.Header = h
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func pct(sorted []time.Duration, p float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	d := sorted[int(float64(len(sorted)-1)*p)]
	return d.Round(time.Microsecond).String()
}

// serve starts h on a loopback port and returns its base URL.
func serve(h http.Handler, proxy bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := sidecar.NewServer("", h)
	if proxy {
		srv = sidecar.NewProxyServer("", h)
	}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String()
}

// startRedis starts redis-server on a free loopback port, or miniredis when
// redis-server is not on PATH.
func startRedis() (*redis.Client, string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		mr := miniredis.NewMiniRedis()
		if err := mr.Start(); err != nil {
			return nil, "", nil, err
		}
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		return rdb, "miniredis (in process)", func() { rdb.Close(); mr.Close() }, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	dir, err := os.MkdirTemp("", "keygate-loadtest-")
	if err != nil {
		return nil, "", nil, err
	}
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		return nil, "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			break
		}
		if i == 100 {
			stop()
			return nil, "", nil, errors.New("redis-server did not answer PING")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return rdb, "redis-server (child process)", func() { rdb.Close(); stop() }, nil
}

// bufferPool gives the bare proxy the response-copy buffer pool that the
// sidecar has, so that the two differ by the auth work only.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (bufferPool) Get() []byte  { return buffers.Get().(*[32 << 10]byte)[:] }
func (bufferPool) Put(b []byte) { buffers.Put((*[32 << 10]byte)(b)) }
