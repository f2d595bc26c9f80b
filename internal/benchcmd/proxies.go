package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/internal/testkit"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
)

// servers are loopback HTTP servers started by a measure, closed together.
type servers []*http.Server

// start serves h on a free loopback port and returns its address.
func (s *servers) start(srv *http.Server) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	*s = append(*s, srv)
	go srv.Serve(ln)
	return ln.Addr().String(), nil
}

func (s servers) close() {
	for _, srv := range s {
		srv.Close()
	}
}

// upstream is the application behind the proxies: a small JSON answer.
var upstream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`)
})

// sidecarLoad compares the sidecar with a bare httputil.ReverseProxy to the
// same upstream, with the same transport, under the same load.
func sidecarLoad(ctx context.Context, e *env) ([]row, error) {
	in, k, err := e.keyed(ctx, keystore.VerifierOptions{})
	if err != nil {
		return nil, err
	}
	defer in.close()
	var srvs servers
	defer srvs.close()
	app, err := srvs.start(sidecar.NewServer("", upstream))
	if err != nil {
		return nil, err
	}
	appURL := &url.URL{Scheme: "http", Host: app}
	bare, err := srvs.start(sidecar.NewProxyServer("", &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(appURL); pr.Out.Host = pr.In.Host; pr.SetXForwarded() },
		Transport:     sidecar.NewTransport(),
		FlushInterval: -1,
		BufferPool:    bufferPool{},
	}))
	if err != nil {
		return nil, err
	}
	px, err := sidecar.NewProxy(in.v, sidecar.ProxyOptions{Upstream: appURL})
	if err != nil {
		return nil, err
	}
	sc, err := srvs.start(sidecar.NewProxyServer("", px))
	if err != nil {
		return nil, err
	}
	auth := http.Header{"Authorization": {"Bearer " + k.Secret}}
	b, kr, err := compareLoad(newTarget("bare proxy", bare, "/orders/1", auth), newTarget("sidecar", sc, "/orders/1", auth),
		e.cfg.conns, e.cfg.runs, e.cfg.round)
	if err != nil {
		return nil, err
	}
	kRPS, bRPS, kP99, bP99, rr, pr := loadRow(b, kr)
	return []row{{
		measure:  fmt.Sprintf("sidecar, %d connections", e.cfg.conns),
		keygate:  fmt.Sprintf("%s, p99 %s", rate(kRPS), dur(kP99)),
		baseline: fmt.Sprintf("%s, p99 %s (bare `httputil.ReverseProxy`)", rate(bRPS), dur(bP99)),
		compare:  fmt.Sprintf("%.0f%% throughput, p99 %.2f×", rr*100, pr),
		goal:     "≥ 85%, p99 ≤ 1.2×",
		verdict:  verdict(rr >= 0.85 && pr <= 1.2),
		note: fmt.Sprintf("the sidecar (cached key, default options) and a bare `httputil.ReverseProxy` "+
			"(same transport, flush and buffer settings, no auth) in front of one Go upstream answering 11 bytes of JSON; "+
			"both get the same GET with the key, from %d keep-alive connections of a closed-loop Go load generator "+
			"in the same process, %s per round, the two taking turns; medians of %d rounds.",
			e.cfg.conns, e.cfg.round, e.cfg.runs),
	}}, nil
}

// forwardAuthLoad runs the documented nginx configuration
// (deploy/forward-auth/nginx.conf) in front of keygate's forward-auth
// endpoint and compares a location that asks keygate (auth_request) with
// one that does not (auth_request off), on the same nginx and upstream.
func forwardAuthLoad(ctx context.Context, e *env) ([]row, error) {
	bin := nginxBinary()
	if bin == "" {
		return nil, errors.New("nginx is not installed (Debian: apt-get install -y nginx-light)")
	}
	in, k, err := e.keyed(ctx, keystore.VerifierOptions{})
	if err != nil {
		return nil, err
	}
	defer in.close()
	fa, err := sidecar.NewForwardAuth(in.v, sidecar.ForwardAuthOptions{})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(sidecar.ForwardAuthPath, fa)
	mux.Handle(sidecar.ForwardAuthPath+"/", fa)
	var srvs servers
	defer srvs.close()
	keygate, err := srvs.start(sidecar.NewServer("", mux))
	if err != nil {
		return nil, err
	}
	app, err := srvs.start(sidecar.NewServer("", upstream))
	if err != nil {
		return nil, err
	}
	ngx, stop, err := startNginx(bin, e.dir, keygate, app)
	if err != nil {
		return nil, err
	}
	defer stop()
	auth := http.Header{"Authorization": {"Bearer " + k.Secret}}
	b, kr, err := compareLoad(newTarget("nginx, no auth", ngx, "/public/1", auth), newTarget("nginx + forward-auth", ngx, "/orders/1", auth),
		e.cfg.conns, e.cfg.runs, e.cfg.round)
	if err != nil {
		return nil, err
	}
	kRPS, bRPS, kP99, bP99, rr, pr := loadRow(b, kr)
	return []row{{
		measure:  fmt.Sprintf("forward-auth behind nginx, %d connections", e.cfg.conns),
		keygate:  fmt.Sprintf("%s, p99 %s", rate(kRPS), dur(kP99)),
		baseline: fmt.Sprintf("%s, p99 %s (nginx proxying, no auth)", rate(bRPS), dur(bP99)),
		compare:  fmt.Sprintf("%.0f%% throughput, p99 %.2f×", rr*100, pr),
		goal:     "report",
		verdict:  "report",
		note: "nginx (one worker) runs `deploy/forward-auth/nginx.conf` as documented (only the addresses changed, access log off): " +
			"`/orders/1` asks keygate's `/forward-auth` (cached key) through `auth_request` before proxying to a Go upstream, " +
			"`/public/1` (`auth_request off`) proxies to the same upstream directly. As in the documented config, nginx opens a new " +
			"upstream connection per request to the app and keeps them alive to keygate. Load as in the sidecar row.",
	}}, nil
}

// startNginx runs the documented nginx snippet in the foreground, pointed
// at keygate and app, and returns its address and a function that stops it.
func startNginx(bin, parent, keygate, app string) (string, func(), error) {
	snippet, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "forward-auth", "nginx.conf"))
	if err != nil {
		return "", nil, fmt.Errorf("reading the documented nginx config: %w", err)
	}
	const keygateAddr, appAddr, listen = "127.0.0.1:8080", "127.0.0.1:3000", "listen 8000;"
	for _, s := range []string{keygateAddr, appAddr, listen} {
		if strings.Count(string(snippet), s) != 1 {
			return "", nil, fmt.Errorf("deploy/forward-auth/nginx.conf does not hold %q exactly once", s)
		}
	}
	dir, err := os.MkdirTemp(parent, "nginx-")
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return "", nil, err
	}
	mainConf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    include %[1]s/keygate.conf;
}
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(mainConf), 0o644); err != nil {
		return "", nil, err
	}
	port, err := testkit.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	conf := strings.NewReplacer(keygateAddr, keygate, appAddr, app, listen, "listen "+addr+";").Replace(string(snippet))
	if err := os.WriteFile(filepath.Join(dir, "keygate.conf"), []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "-p", dir+"/", "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() { cmd.Process.Kill(); <-exited }
	for i := 0; i < 250; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return "", nil, fmt.Errorf("nginx exited: %s %s", out, log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stop()
	return "", nil, errors.New("nginx did not accept connections within 5s")
}

// repoRoot is the directory of go.mod, found upwards from the working
// directory (make runs the command at the root).
func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// bufferPool gives the bare proxy the response-copy buffers the sidecar
// has, so that the two differ by the auth work only.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[32 << 10]byte)[:] }
func (bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		buffers.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}
