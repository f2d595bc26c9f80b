package console_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/keygate/keygate/internal/redistest"
)

// BenchmarkKeysPage is one signed-in request for the key list (20 of 100
// keys): session lookup, the in-process admin API call, rendering; on
// miniredis, over loopback HTTP.
func BenchmarkKeysPage(b *testing.B) {
	benchmarkPage(b, func(e *env, id string) string { return "/console/keys" })
}

// BenchmarkKeyPage is one request for a key's page: the key, 25 hourly
// usage buckets drawn as SVG, and its audit trail.
func BenchmarkKeyPage(b *testing.B) {
	benchmarkPage(b, func(e *env, id string) string { return "/console/keys/" + id })
}

func benchmarkPage(b *testing.B, path func(*env, string) string) {
	_, rdb := redistest.Mini(b)
	e := newEnv(b, rdb)
	var id string
	for i := range 100 {
		id = e.createKey(b, fmt.Sprintf("bench-%03d", i), "org_bench").ID
	}
	br := e.browser(b)
	br.mustSignIn(adminTok)
	url := path(e, id)
	b.ResetTimer()
	for b.Loop() {
		if p := br.get(url); p.status != http.StatusOK {
			b.Fatalf("%s: %d", url, p.status)
		}
	}
}
