package deploy

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	// The types the configurations name in typed_config.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
)

// loadEnvoy reads an Envoy configuration of forward-auth/ into Envoy's
// own v3 protos, strictly (an unknown field or type fails), and runs
// their validation rules. No Envoy runs here; this is what can be checked
// without one.
func loadEnvoy(t *testing.T, name string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw := readFile(t, filepath.Join("forward-auth", name))
	js, err := yaml.YAMLToJSON([]byte(raw))
	if err != nil {
		t.Fatalf("forward-auth/%s: %v", name, err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatalf("forward-auth/%s is not an Envoy v3 bootstrap: %v", name, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("forward-auth/%s: %v", name, err)
	}
	return &b
}

// TestEnvoyConfigurations loads both Envoy configurations, and checks
// that the gRPC one talks HTTP/2 to the port its comment starts keygate
// on, denies when keygate cannot be asked, and gives keygate only the
// context extensions it reads.
func TestEnvoyConfigurations(t *testing.T) {
	loadEnvoy(t, "envoy.yaml")
	b := loadEnvoy(t, "envoy-grpc.yaml")
	if _, ok := commands["serve"].flags["grpc-listen"]; !ok {
		t.Fatal("keygate serve has no --grpc-listen, which envoy-grpc.yaml relies on")
	}
	raw := readFile(t, filepath.Join("forward-auth", "envoy-grpc.yaml"))

	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	var authz extauthzv3.ExtAuthz
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == "envoy.filters.http.ext_authz" {
			if err := f.GetTypedConfig().UnmarshalTo(&authz); err != nil {
				t.Fatal(err)
			}
		}
	}
	if authz.GetFailureModeAllow() || authz.GetStatusOnError().GetCode() != 503 {
		t.Errorf("ext_authz must deny with 503 when keygate cannot be asked: failure_mode_allow %v, status_on_error %v",
			authz.GetFailureModeAllow(), authz.GetStatusOnError())
	}
	name := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	keygate := clusters[name]
	if keygate == nil {
		t.Fatalf("ext_authz asks cluster %q, which is not defined", name)
	}
	var opts upstreamhttpv3.HttpProtocolOptions
	if err := keygate.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&opts); err != nil ||
		opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("cluster %s must speak HTTP/2 (gRPC): %v", name, err)
	}
	sa := keygate.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	listen := "--grpc-listen " + sa.GetAddress() + ":" + strconv.Itoa(int(sa.GetPortValue()))
	if !strings.Contains(raw, listen) {
		t.Errorf("envoy-grpc.yaml asks %s:%d; its comments must start keygate with %q", sa.GetAddress(), sa.GetPortValue(), listen)
	}

	scoped := 0
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			cfg, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"]
			if !ok {
				continue
			}
			var per extauthzv3.ExtAuthzPerRoute
			if err := cfg.UnmarshalTo(&per); err != nil {
				t.Fatal(err)
			}
			for k, v := range per.GetCheckSettings().GetContextExtensions() {
				switch k {
				case "keygate_scopes":
					scoped++
				case "keygate_cost":
					if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 1_000_000 {
						t.Errorf("keygate_cost %q: keygate takes 1 to 1000000", v)
					}
				default:
					t.Errorf("context extension %q: keygate reads keygate_scopes and keygate_cost only", k)
				}
			}
		}
	}
	if scoped == 0 {
		t.Error("no route of envoy-grpc.yaml shows keygate_scopes")
	}
}
