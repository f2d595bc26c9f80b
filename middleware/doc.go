// Package middleware verifies API keys in front of net/http handlers ([New],
// [RequireScopes]) with a [keystore.Verifier], so that a key gets the same
// answer here as from the sidecar, forward-auth and POST /api_keys/verify.
// Its Echo v4 form is package middleware/echomw, apart so that a net/http
// user does not build Echo (docs/packages.md).
//
// With net/http:
//
//	auth := middleware.New(verifier, middleware.Options{})
//	mux := http.NewServeMux()
//	mux.Handle("GET /reports", middleware.RequireScopes("reports:read")(reports))
//	http.ListenAndServe(":8080", auth(mux))
//
// and in the handler:
//
//	key, _ := middleware.FromContext(r.Context())
//	fmt.Fprintln(w, "hello", key.Subject)
//
// With Echo, import github.com/keygate/keygate/middleware/echomw:
//
//	e := echo.New()
//	e.Use(echomw.New(verifier, echomw.Config{}))
//	e.GET("/reports", reports, echomw.RequireScopes("reports:read"))
//
// and in the handler, key, _ := echomw.Key(c).
//
// The key is read from "Authorization: Bearer <key>" (the scheme in any case)
// or X-API-Key, from a query parameter only when [KeyLookup] lists one, and
// never from the body. The answers are those of docs/verification.md:
//
//   - valid: the handler runs with the key in the request context;
//   - missing: 401, WWW-Authenticate: Bearer realm="keygate";
//   - malformed, unknown, revoked, expired: 401, WWW-Authenticate:
//     Bearer realm="keygate", error="invalid_token";
//   - a valid key without a required scope: 403, WWW-Authenticate:
//     Bearer realm="keygate", error="insufficient_scope", scope="<required>";
//   - the store unreachable: 503 with Retry-After, whatever the options:
//     the request never goes through.
//
// The net/http middleware writes refusals with [WriteError] (the JSON
// error body of docs/api.md) unless Options.ErrorHandler says otherwise; echomw
// returns them as *echo.HTTPError for Echo's HTTPErrorHandler.
package middleware
