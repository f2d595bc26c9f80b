package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"

	"github.com/keygate/keygate/internal/keystoretest"
	"github.com/keygate/keygate/keystore/adminapi"
	"github.com/keygate/keygate/keystore/apikey"
	"github.com/keygate/keygate/keystore/client"
)

func ExampleNew() {
	// The admin API, as keygate serve runs it, on an in-process Redis.
	const token = "s3cret-admin-token-of-32-characters"
	store, verifier, _, stop := keystoretest.Demo()
	defer stop()
	api, err := adminapi.New(adminapi.Options{Store: store, Verifier: verifier, AdminTokens: []string{token}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	server := httptest.NewServer(api)

	c, err := client.New(server.URL, token)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	key, err := c.Create(ctx, apikey.CreateParams{Name: "CI", Subject: "user_7", Scopes: []string{"reports:read"}})
	if err != nil {
		log.Fatal(err)
	}
	got, err := c.Verify(ctx, key.Secret)
	fmt.Println(got.Subject, got.Scopes, err)

	if _, err := c.Revoke(ctx, key.ID, nil); err != nil {
		log.Fatal(err)
	}
	_, err = c.Verify(ctx, key.Secret)
	fmt.Println("revoked:", errors.Is(err, apikey.ErrRevoked))

	server.Close() // the admin API is gone: the answer is unknown
	_, err = c.Get(ctx, key.ID)
	fmt.Println("unavailable:", errors.Is(err, apikey.ErrUnavailable))
	// Output:
	// user_7 [reports:read] <nil>
	// revoked: true
	// unavailable: true
}
