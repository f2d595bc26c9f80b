package adminapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

// exampleHandler builds the admin API on an in-memory Redis. A program
// uses its own Redis client, and the same Verifier as its middleware.
func exampleHandler() (http.Handler, func()) {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	store, err := keystore.New(rdb, keystore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := keystore.NewVerifier(store, keystore.VerifierOptions{})
	if err != nil {
		log.Fatal(err)
	}
	h, err := adminapi.New(adminapi.Options{
		Store:       store,
		Verifier:    verifier,
		AdminTokens: []string{"s3cret-admin-token-of-32-characters"},
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	return h, func() { verifier.Close(); store.Close(); rdb.Close(); mr.Close() }
}

var keyID = regexp.MustCompile(`ak_[0-9a-f]{32}`)

// call sends one request with the admin token and prints the answer's
// status and Content-Type.
func call(method, url, body string) *http.Response {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer s3cret-admin-token-of-32-characters")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	path := keyID.ReplaceAllString(strings.SplitN(url, "/", 4)[3], "{id}")
	fmt.Println(method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
	return resp
}

// Mount the admin API in a plain http.ServeMux, under /api_keys and
// /v1/api_keys.
func Example() {
	h, cleanup := exampleHandler()
	defer cleanup()

	mux := http.NewServeMux()
	for _, p := range []string{"/api_keys", "/api_keys/", "/v1/api_keys", "/v1/api_keys/"} {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp := call("POST", srv.URL+"/v1/api_keys", `{"name":"CI","subject":"user_42","scopes":["reports:read"]}`)
	var key keystore.APIKey
	json.NewDecoder(resp.Body).Decode(&key)
	resp.Body.Close()
	fmt.Println(key.Subject, key.Scopes, strings.HasPrefix(key.Secret, "ak_"))

	resp = call("POST", srv.URL+"/api_keys/verify", fmt.Sprintf(`{"secret":%q}`, key.Secret))
	resp.Body.Close()

	resp = call("GET", srv.URL+"/api_keys/"+key.ID+"/secret", "")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(strings.Contains(string(body), `"code":"api_key_secret_unavailable"`))
	// Output:
	// POST v1/api_keys 200 application/json
	// user_42 [reports:read] true
	// POST api_keys/verify 200 application/json
	// GET api_keys/{id}/secret 404 application/json
	// true
}

// Mount the admin API in Echo with echo.WrapHandler.
func Example_echo() {
	h, cleanup := exampleHandler()
	defer cleanup()

	e := echo.New()
	e.HideBanner = true
	wrapped := echo.WrapHandler(h)
	e.Any("/api_keys", wrapped)
	e.Any("/api_keys/*", wrapped)
	e.Any("/v1/api_keys", wrapped)
	e.Any("/v1/api_keys/*", wrapped)
	srv := httptest.NewServer(e)
	defer srv.Close()

	call("POST", srv.URL+"/api_keys", `{"name":"CI","subject":"org_7"}`).Body.Close()
	resp := call("GET", srv.URL+"/v1/api_keys?subject=org_7", "")
	var list keystore.KeyList
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	fmt.Println(list.TotalCount, list.Data[0].Name)
	// Output:
	// POST api_keys 200 application/json
	// GET v1/api_keys?subject=org_7 200 application/json
	// 1 CI
}
