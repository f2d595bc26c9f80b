package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/middleware"
)

// The Echo form of the middleware is package middleware/echomw (see its
// example).
func ExampleNew() {
	_, verifier, secret, stop := keystoretest.Demo()
	defer stop()
	reports := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, _ := middleware.FromContext(r.Context())
		fmt.Fprintf(w, "reports of %s", key.Subject)
	})

	mux := http.NewServeMux()
	mux.Handle("GET /reports", middleware.RequireScopes("reports:read")(reports))
	mux.Handle("DELETE /reports", middleware.RequireScopes("reports:write")(reports))
	handler := middleware.New(verifier, middleware.Options{})(mux)

	try(handler, "GET", "Bearer "+secret)
	try(handler, "DELETE", "Bearer "+secret)
	try(handler, "GET", "")
	// Output:
	// GET 200 reports of user_42
	// DELETE 403 Bearer realm="keygate", error="insufficient_scope", scope="reports:write"
	// GET 401 Bearer realm="keygate"
}

func ExampleOptions_optional() {
	_, verifier, secret, stop := keystoretest.Demo()
	defer stop()
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key, ok := middleware.FromContext(r.Context()); ok {
			fmt.Fprintf(w, "hello %s", key.Subject)
			return
		}
		fmt.Fprint(w, "hello stranger")
	})

	handler := middleware.New(verifier, middleware.Options{Optional: true})(hello)

	try(handler, "GET", "Bearer "+secret)
	try(handler, "GET", "")
	try(handler, "GET", "Bearer ak_not_a_key")
	// Output:
	// GET 200 hello user_42
	// GET 200 hello stranger
	// GET 401 Bearer realm="keygate", error="invalid_token"
}

// try sends a request for /reports and prints the status and the body, or
// the challenge of a refusal.
func try(h http.Handler, method, authorization string) {
	r := httptest.NewRequest(method, "/reports", nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code == http.StatusOK {
		fmt.Println(method, w.Code, w.Body.String())
		return
	}
	fmt.Println(method, w.Code, w.Header().Get("WWW-Authenticate"))
}
