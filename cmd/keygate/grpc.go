package main

import (
	"context"
	"net"

	"google.golang.org/grpc"

	"github.com/keygate/keygate/sidecar/extauthz"
)

// grpcServer serves Envoy's gRPC ext_authz (--grpc-listen).
type grpcServer struct{ g *grpc.Server }

func newGRPCServer(authz *extauthz.Server, opts ...grpc.ServerOption) grpcServer {
	g := grpc.NewServer(opts...)
	authz.Register(g)
	return grpcServer{g}
}

func (s grpcServer) Serve(ln net.Listener) error { return s.g.Serve(ln) }

// Shutdown stops taking calls and waits for those in flight until ctx is
// done, then cuts them off.
func (s grpcServer) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.g.Stop()
		return ctx.Err()
	}
}
