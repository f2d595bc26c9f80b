package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/internal/testkit"
)

// TestServeGRPC runs serve with --grpc-listen and asks it over gRPC, as
// Envoy's ext_authz filter would: a live key is let through with its
// identity, the same key is denied with 401 once revoked, and SIGTERM
// still exits 0. serve also answers /v1/openapi.json without a token.
func TestServeGRPC(t *testing.T) {
	addr, grpcAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	base := "http://" + addr
	env := []string{"KEYGATE_DATA_DIR=" + t.TempDir(), "KEYGATE_URL=" + base}
	serve := start(t, env, base+"/healthz", "serve", "--listen", addr, "--grpc-listen", grpcAddr)
	key := decode[createdKey](t, mustCLI(t, env, "keys", "create", "--name", "envoy", "--subject", "user_7", "--scopes", "reports:read", "--json"))

	conn, err := grpc.NewClient("passthrough:///"+grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func() *authv3.CheckResponse {
		t.Helper()
		resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/reports/1", Host: "app.example", Scheme: "http",
				Headers: map[string]string{"authorization": "Bearer " + key.Secret},
			}},
			ContextExtensions: map[string]string{"keygate_scopes": "reports:read"},
		}})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return resp
	}
	ok := check().GetOkResponse()
	subject := ""
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == "x-api-key-subject" {
			subject = h.GetHeader().GetValue()
		}
	}
	if subject != "user_7" {
		t.Fatalf("live key: OK response %v, want the subject user_7", ok)
	}
	mustCLI(t, env, "keys", "revoke", key.ID)
	if d := check().GetDeniedResponse(); d.GetStatus().GetCode() != 401 {
		t.Fatalf("revoked key: %v, want a 401 denial", d)
	}
	// The admin API's OpenAPI document, without an admin token.
	resp, err := http.Get(base + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(doc), `"openapi": "3.1.0"`) {
		t.Errorf("GET /v1/openapi.json: %d %s %.100s", resp.StatusCode, resp.Header.Get("Content-Type"), doc)
	}
	if code := serve.stop(t); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM:\n%s", code, serve.stderr)
	}
}
