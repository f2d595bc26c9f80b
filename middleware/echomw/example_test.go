package echomw_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/labstack/echo/v4"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/middleware/echomw"
)

func ExampleNew() {
	_, verifier, secret, stop := keystoretest.Demo()
	defer stop()
	reports := func(c echo.Context) error {
		key, _ := echomw.Key(c)
		return c.String(http.StatusOK, "reports of "+key.Subject)
	}

	e := echo.New()
	e.Use(echomw.New(verifier, echomw.Config{}))
	e.GET("/reports", reports, echomw.RequireScopes("reports:read"))
	e.DELETE("/reports", reports, echomw.RequireScopes("reports:write"))

	for _, method := range []string{"GET", "DELETE"} {
		for _, bearer := range []string{secret, "ak_not_a_key"} {
			r := httptest.NewRequest(method, "/reports", nil)
			r.Header.Set("Authorization", "Bearer "+bearer)
			w := httptest.NewRecorder()
			e.ServeHTTP(w, r)
			if w.Code == http.StatusOK {
				fmt.Println(method, w.Code, w.Body.String())
			} else { // Echo's HTTPErrorHandler wrote the *echo.HTTPError
				fmt.Println(method, w.Code, w.Header().Get("WWW-Authenticate"))
			}
		}
	}
	// Output:
	// GET 200 reports of user_42
	// GET 401 Bearer realm="keygate", error="invalid_token"
	// DELETE 403 Bearer realm="keygate", error="insufficient_scope", scope="reports:write"
	// DELETE 401 Bearer realm="keygate", error="invalid_token"
}
