package adminapi

import (
	_ "embed"
	"net/http"

	"github.com/keygate/keygate/internal/apierror"
)

// openAPIDocument is the OpenAPI 3.1 document of the admin API: every
// route, field, status and error code. The tests validate every request
// they make and every response they get against it.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIPath is where keygate serve serves [OpenAPI].
const OpenAPIPath = "/v1/openapi.json"

// OpenAPI returns a handler that answers GET and HEAD with the admin API's
// OpenAPI 3.1 document, as application/json, without an admin token: it
// describes the API, and holds nothing a client could not learn by
// calling it. Other methods get 405 method_not_allowed.
func OpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = apierror.WithRequestID(w, r)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			apierror.Write(w, apierror.RequestID(r), &apierror.Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
				Message: "method not allowed", LongMessage: r.Method + " is not allowed on " + OpenAPIPath + "; allowed: GET, HEAD"})
			return
		}
		w.Header().Set("Content-Type", apierror.ContentType)
		w.Header().Set("Cache-Control", "no-cache")
		if r.Method == http.MethodHead {
			return
		}
		w.Write(openAPIDocument)
	})
}
