package middleware_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/alicebob/miniredis/v2"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/middleware"
	"github.com/keygate/keygate/middleware/echomw"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

func ExampleNew() {
	verifier, secret, stop := demo()
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

// The Echo form of the middleware is package middleware/echomw.
func Example_echo() {
	verifier, secret, stop := demo()
	defer stop()
	reports := func(c echo.Context) error {
		key, _ := echomw.Key(c)
		return c.String(http.StatusOK, "reports of "+key.Subject)
	}

	e := echo.New()
	e.Use(echomw.New(verifier, echomw.Config{}))
	e.GET("/reports", reports, echomw.RequireScopes("reports:read"))
	e.DELETE("/reports", reports, echomw.RequireScopes("reports:write"))

	try(e, "GET", "Bearer "+secret)
	try(e, "DELETE", "Bearer "+secret)
	try(e, "GET", "Bearer ak_not_a_key")
	// Output:
	// GET 200 reports of user_42
	// DELETE 403 Bearer realm="keygate", error="insufficient_scope", scope="reports:write"
	// GET 401 Bearer realm="keygate", error="invalid_token"
}

func ExampleOptions_optional() {
	verifier, secret, stop := demo()
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

// demo returns a verifier on an in-process Redis and the secret of a key
// of user_42 with the scope reports:read.
func demo() (*keystore.Verifier, string, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	store, err := keystore.New(rdb, keystore.Options{})
	if err != nil {
		panic(err)
	}
	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{})
	if err != nil {
		panic(err)
	}
	key, err := store.Create(context.Background(), keystore.CreateParams{
		Name: "reports bot", Subject: "user_42", Scopes: []string{"reports:read"},
	})
	if err != nil {
		panic(err)
	}
	return verifier, key.Secret, func() {
		verifier.Close()
		store.Close()
		rdb.Close()
		mr.Close()
	}
}
