package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/sidecar"
)

// exampleVerifier opens a store and a verifier on an in-memory Redis, and
// creates a key for user_42 with the scope reports:read. A program uses
// its own Redis client (redis.NewClient, redis.NewClusterClient, …).
func exampleVerifier(reg prometheus.Registerer) (*keystore.Verifier, *keystore.APIKey, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	store, err := keystore.New(rdb, keystore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{Registerer: reg})
	if err != nil {
		log.Fatal(err)
	}
	key, err := store.Create(context.Background(), keystore.CreateParams{
		Name: "reports reader", Subject: "user_42", Scopes: []string{"reports:read"},
	})
	if err != nil {
		log.Fatal(err)
	}
	return verifier, key, func() { verifier.Close(); store.Close(); rdb.Close(); mr.Close() }
}

// call sends a request, with secret as a bearer token unless it is empty,
// and prints the status and the body, or the code and the reason of an
// error body (docs/api.md).
func call(method, rawURL, secret string) {
	req, _ := http.NewRequest(method, rawURL, nil)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Errors []struct {
			Code        string `json:"code"`
			LongMessage string `json:"long_message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) == 1 {
		body = []byte(e.Errors[0].Code + ": " + e.Errors[0].LongMessage)
	}
	fmt.Printf("%s %s: %d %s\n", method, req.URL.Path, resp.StatusCode, strings.TrimSpace(string(body)))
}

// The sidecar in front of an app, with its ops endpoints on a listener of
// their own, until ctx is done; a program cancels ctx on SIGTERM
// (signal.NotifyContext). The app sees who called, never the key.
func ExampleNewProxy() {
	reg := prometheus.NewRegistry()
	verifier, key, cleanup := exampleVerifier(reg)
	defer cleanup()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app: subject %q, Authorization %q", r.Header.Get(sidecar.HeaderKeySubject), r.Header.Get("Authorization"))
	}))
	defer app.Close()

	upstream, _ := url.Parse(app.URL)
	proxy, err := sidecar.NewProxy(verifier, sidecar.ProxyOptions{
		Upstream:      upstream,
		Public:        []string{"/healthz"},
		RequireScopes: []string{"POST /reports/=reports:write", "/reports/=reports:read"},
		Registerer:    reg,
	})
	if err != nil {
		log.Fatal(err) // names the bad option
	}
	// Listen first, so that a taken port fails at start.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 2)
	go func() {
		served <- sidecar.Serve(ctx, sidecar.NewServer("", sidecar.NewOps(verifier, reg)), opsLn, time.Second)
	}()
	go func() { served <- sidecar.Serve(ctx, sidecar.NewProxyServer("", proxy), ln, time.Second) }()

	base := "http://" + ln.Addr().String()
	call("GET", base+"/reports/1", "")
	call("GET", base+"/reports/1", key.Secret)
	call("POST", base+"/reports/1", key.Secret)
	call("GET", base+"/healthz", "")
	call("GET", "http://"+opsLn.Addr().String()+"/readyz", "")

	cancel() // both drain and return
	fmt.Println("shut down:", <-served, <-served)
	// Output:
	// GET /reports/1: 401 authentication_invalid: no API key in the request
	// GET /reports/1: 200 app: subject "user_42", Authorization ""
	// POST /reports/1: 403 insufficient_scope: the API key lacks a required scope: reports:write
	// GET /healthz: 200 app: subject "", Authorization ""
	// GET /readyz: 200 ready
	// shut down: <nil> <nil>
}

// The forward-auth endpoint, mounted at /forward-auth and below, as nginx's
// auth_request asks it: 200 with the identity in headers for the proxy to
// copy to the app, 401 without a valid key.
func ExampleNewForwardAuth() {
	verifier, key, cleanup := exampleVerifier(nil)
	defer cleanup()

	fa, err := sidecar.NewForwardAuth(verifier, sidecar.ForwardAuthOptions{})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(sidecar.ForwardAuthPath, fa)
	mux.Handle(sidecar.ForwardAuthPath+"/", fa)
	srv := httptest.NewServer(mux) // a program: sidecar.NewServer(":8080", mux)
	defer srv.Close()

	for _, secret := range []string{"", key.Secret} {
		req, _ := http.NewRequest("GET", srv.URL+sidecar.ForwardAuthPath, nil)
		req.Header.Set("X-Original-URI", "/reports/1")
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Printf("%d subject %q scopes %q\n", resp.StatusCode, resp.Header.Get(sidecar.HeaderKeySubject), resp.Header.Get(sidecar.HeaderKeyScopes))
	}
	// Output:
	// 401 subject "" scopes ""
	// 200 subject "user_42" scopes "reports:read"
}
