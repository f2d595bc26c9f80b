// Package sidecar puts keygate's verification in front of applications that
// do not link the Go middleware: a reverse proxy ([NewProxy], the `keygate
// sidecar` command), a forward-auth endpoint for nginx, Traefik, Caddy and
// Envoy ([NewForwardAuth], part of `keygate serve`), and the sidecar's ops
// endpoints ([NewOps]). Every handler verifies through one
// [keystore.Verifier], so each gives the answer the middleware would give.
//
// A verified request reaches the upstream without its credential and with
// the identity headers [HeaderKeyID], [HeaderKeySubject], [HeaderKeyName],
// [HeaderKeyScopes] and [HeaderKeyClaims]; any such header a client sent
// is removed first.
//
//	reg := prometheus.NewRegistry()
//	upstream, _ := url.Parse("http://127.0.0.1:3000")
//	proxy, err := sidecar.NewProxy(verifier, sidecar.ProxyOptions{
//		Upstream:      upstream,
//		Public:        []string{"/healthz", "/docs/"},
//		RequireScopes: []string{"POST /reports/=reports:write", "/reports/=reports:read"},
//		Registerer:    reg,
//	})
//	if err != nil { … } // names the bad option
//
//	// Listen first, so that a taken port fails at start.
//	ln, err := net.Listen("tcp", ":8081")
//	opsLn, err := net.Listen("tcp", "127.0.0.1:9091")
//	go sidecar.Serve(ctx, sidecar.NewServer("", sidecar.NewOps(verifier, reg)), opsLn, 0)
//	err = sidecar.Serve(ctx, sidecar.NewProxyServer("", proxy), ln, 0) // until ctx is done, then drain
//
// Path prefixes, in Public and RequireScopes alike, match as nginx's
// prefix locations do: "/docs" also matches "/docs-internal", "/docs/"
// does not. The longest matching prefix decides; on a tie a
// method-specific rule wins over an any-method one, and a scope rule over a
// public one. So that an upstream's routing cannot outflank them, scope
// rules compare case-insensitively and a rule for "/admin/" also covers
// "/admin"; public prefixes compare exactly. A request needs what every
// reading of its path needs (as sent or decoded, with or without ";"
// parameters, merged slashes and resolved dot segments), and is refused
// with 400 when the decoder would change that.
//
// Configuration for nginx and Caddy (the ones the tests run in the real
// proxies), Traefik, and Envoy (over HTTP, or over gRPC with package
// [github.com/keygate/keygate/sidecar/extauthz]) is in deploy/forward-auth/.
package sidecar
