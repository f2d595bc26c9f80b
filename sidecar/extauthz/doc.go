// Package extauthz answers Envoy's external authorization over gRPC
// (envoy.service.auth.v3.Authorization/Check, the ext_authz filter with a
// grpc_service) with a keygate verifier. It gives the answers of the HTTP
// forward-auth endpoint ([sidecar.NewForwardAuth]) in Envoy's terms:
//
//   - a valid key: OK, with the identity headers ([sidecar.HeaderKeyID] …)
//     set on the request, and headers_to_remove naming the credential
//     (Authorization, X-API-Key, as the key lookup reads them) and every
//     identity or forwarding header the client sent ([sidecar.Spoofable]);
//     X-Forwarded-For, -Host and -Proto are set as the sidecar sets them,
//     from the CheckRequest's source address; a key with rate limits also
//     gets its RateLimit headers on the response to the client;
//   - a refusal: a DeniedHttpResponse with the status (401, 403, 429, 503),
//     WWW-Authenticate, Retry-After, RateLimit headers and JSON body that
//     forward-auth would answer. An unreachable store is a denial with 503,
//     never a gRPC error, so that failure_mode_allow cannot let it through.
//
// The route's required scopes come from its context extension
// keygate_scopes (comma-separated, [ExtensionScopes]) and its cost from
// keygate_cost ([ExtensionCost]); never from the client's headers.
// Verifications count under the forward_auth source.
//
//	authz, err := extauthz.New(verifier, extauthz.Options{})
//	if err != nil { … }
//	g := grpc.NewServer()
//	authz.Register(g)
//	err = g.Serve(ln)
//
// deploy/forward-auth/envoy-grpc.yaml is an Envoy configuration that uses
// it.
package extauthz
