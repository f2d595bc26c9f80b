package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/keystore"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/audit"
	"github.com/keygate/keygate/keystore/client"
)

// TestAuditEventsAndForbidden lists the audit events with a read token,
// and reads the 403 a read token gets for a create.
func TestAuditEventsAndForbidden(t *testing.T) {
	ctx := context.Background()
	_, rdb := redistest.Mini(t)
	store, verifier := keystoretest.New(t, rdb, keystore.Options{LastUsedFlush: -1}, keystore.VerifierOptions{})
	const readToken = "kg-client-read-token-5e0c2b7a9d41f836"
	h, err := adminapi.New(adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{adminToken},
		Tokens: []adminapi.Token{{Name: "grafana", Role: adminapi.RoleRead, Token: readToken}},
		Audit:  audit.New(rdb, audit.Options{}), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	admin := newClient(t, srv.URL)
	reader, err := client.New(srv.URL, readToken)
	if err != nil {
		t.Fatal(err)
	}
	k, err := admin.Create(ctx, keystore.CreateParams{Name: "CI", Subject: "user_42"})
	if err != nil {
		t.Fatal(err)
	}
	page, err := reader.AuditEvents(ctx, client.AuditFilter{APIKeyID: k.ID, Action: "api_key.created"})
	if err != nil || len(page.Data) != 1 || page.Data[0].Actor.Name != "token-1" || page.Data[0].APIKeyID != k.ID {
		t.Fatalf("AuditEvents: %+v, %v", page, err)
	}
	_, err = reader.Create(ctx, keystore.CreateParams{Name: "x", Subject: "user_42"})
	var apiErr *client.APIError
	if !errors.Is(err, client.ErrForbidden) || !errors.As(err, &apiErr) || apiErr.Status != 403 ||
		!strings.Contains(err.Error(), `"grafana" has the role read`) || !strings.Contains(err.Error(), "use an admin token whose role allows it") {
		t.Fatalf("create with a read token: %v", err)
	}
	if _, err := admin.Get(ctx, "ak_00000000000000000000000000000000"); errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a 404 matches ErrForbidden: %v", err)
	}
}
