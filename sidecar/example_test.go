package sidecar_test

import (
	"context"
	"log"
	"net"
	"net/http"
	"net/url"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
)

// The sidecar in front of an app on port 3000, its ops endpoints on a
// loopback port of their own, until SIGTERM.
func ExampleNewProxy() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	store, err := keystore.New(rdb, keystore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{Registerer: reg})
	if err != nil {
		log.Fatal(err)
	}
	defer verifier.Close()

	upstream, _ := url.Parse("http://127.0.0.1:3000")
	proxy, err := sidecar.NewProxy(verifier, sidecar.ProxyOptions{
		Upstream:      upstream,
		Public:        []string{"/healthz"},
		RequireScopes: []string{"POST /reports/=reports:write", "/reports/=reports:read"},
		Registerer:    reg,
	})
	if err != nil {
		log.Fatal(err) // names the bad option
	}
	ln, err := net.Listen("tcp", ":8081")
	if err != nil {
		log.Fatal(err)
	}
	opsLn, err := net.Listen("tcp", "127.0.0.1:9091")
	if err != nil {
		log.Fatal(err)
	}
	go sidecar.Serve(ctx, sidecar.NewServer("", sidecar.NewOps(verifier, reg)), opsLn, 0)
	if err := sidecar.Serve(ctx, sidecar.NewProxyServer("", proxy), ln, 0); err != nil {
		log.Fatal(err)
	}
}

// The forward-auth endpoint, mounted at /forward-auth and below.
func ExampleNewForwardAuth() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	store, _ := keystore.New(rdb, keystore.Options{})
	verifier, _ := keystore.NewVerifier(store, keystore.VerifierOptions{})

	fa, err := sidecar.NewForwardAuth(verifier, sidecar.ForwardAuthOptions{})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(sidecar.ForwardAuthPath, fa)
	mux.Handle(sidecar.ForwardAuthPath+"/", fa)
	_ = sidecar.NewServer(":8080", mux)
}
