// Package adminapi serves keygate's admin API (docs/api.md): create,
// list, get, update, revoke, delete and verify API keys over HTTP, under
// both /api_keys and /v1/api_keys, wire-compatible with Clerk's Backend API
// so that Clerk's SDKs work against it unchanged.
//
// [New] returns a plain [http.Handler]. It matches full request paths, so it
// is mounted on the /api_keys and /v1/api_keys subtrees as they are:
//
//	h, err := adminapi.New(adminapi.Options{
//		Store:       store,
//		Verifier:    verifier,
//		AdminTokens: []string{os.Getenv("ADMIN_TOKEN")},
//	})
//	if err != nil { … }
//	mux := http.NewServeMux()
//	for _, p := range []string{"/api_keys", "/api_keys/", "/v1/api_keys", "/v1/api_keys/"} {
//		mux.Handle(p, h)
//	}
//
// In Echo, wrap it with echo.WrapHandler:
//
//	e := echo.New()
//	wrapped := echo.WrapHandler(h)
//	e.Any("/api_keys", wrapped)
//	e.Any("/api_keys/*", wrapped)
//	e.Any("/v1/api_keys", wrapped)
//	e.Any("/v1/api_keys/*", wrapped)
//
// Every request needs Authorization: Bearer and one of the admin tokens;
// a token's [Role] decides which routes it may call (403
// authorization_invalid beyond it). With [Options.Audit], every change is
// recorded before the call answers, and GET /v1/audit_events lists the
// events (docs/audit.md).
// Every answer is JSON with Content-Type exactly application/json: 200 on
// success, and otherwise Clerk's error body, with the request's
// X-Request-Id (or a fresh one) as clerk_trace_id. A store that cannot be
// reached is 503 store_unavailable with Retry-After; a revoke, update or
// delete that is stored but whose cache invalidation could not be confirmed
// is 503 invalidation_unconfirmed with Retry-After (repeat it:
// docs/revocation.md). The API answers no 500.
//
// The API is described by an OpenAPI 3.1 document, openapi.json in this
// package: every route, field, header, status and error code. [OpenAPI]
// serves it (keygate serve, at [OpenAPIPath], without an admin token), and
// the package's tests validate every request they make and every response
// they get against it, so that it cannot drift from the API.
//
// Decisions docs/api.md leaves to the implementation (README, "Decisions the
// specification leaves open"):
//   - A body is read as JSON whatever its Content-Type, and an empty body is
//     read as {} (Clerk's SDK sends Content-Type: application/json on GET
//     and DELETE too, and no body when there is nothing to send).
//   - Invalid UTF-8 anywhere in a body, trailing data after the object, and
//     a body that is not an object are request_body_invalid.
//   - In PATCH, null clears description, claims and scopes, and a null
//     seconds_until_expiration makes the key never expire; an absent field
//     is left as it is.
//   - An empty revocation_reason is stored as no reason (null).
//   - offset is at most 2³¹−1 and limit, when given, 1–100 (limit=0 is
//     refused, not read as the default); include_invalid is true or false.
//     Unknown query parameters are ignored.
//   - Authentication comes first: an unauthenticated request learns
//     nothing about routes or methods (401 before 404 or 405).
//   - The route label of keygate_admin_requests_total is "METHOD pattern"
//     (for example "GET /api_keys/{id}", /v1 folded into the same
//     pattern), the bare pattern on a 405, and "unmatched" for a path that
//     is no route.
package adminapi
