package adminapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/keystore"
)

// TestUsageFields creates, reads, updates and clears rate_limits and
// credits, and refuses bad ones naming the field.
func TestUsageFields(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, `{"name":"n","subject":"s","rate_limits":[{"name":"default","limit":100,"duration_ms":60000}],
		"credits":{"remaining":1000,"refill":{"interval":"month","amount":1000}}}`)
	if len(k.RateLimits) != 1 || k.RateLimits[0] != (keystore.RateLimit{Name: "default", Limit: 100, DurationMs: 60000}) {
		t.Fatalf("rate_limits %+v", k.RateLimits)
	}
	if c := k.Credits; c == nil || c.Remaining != 1000 || c.Refill == nil || c.Refill.DayOfMonth != 1 || c.LastRefillAt != nil {
		t.Fatalf("credits %+v", k.Credits)
	}
	rec := e.do("PATCH", "/v1/api_keys/"+k.ID, `{"rate_limits":[],"credits":{"remaining":5,"refill":null}}`)
	var got keystore.APIKey
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
		t.Fatalf("update: %d %s", rec.Code, rec.Body)
	}
	if len(got.RateLimits) != 0 || got.RateLimits == nil || got.Credits == nil || got.Credits.Remaining != 5 || got.Credits.Refill != nil {
		t.Fatalf("after update: rate_limits %v, credits %+v", got.RateLimits, got.Credits)
	}
	if rec := e.do("PATCH", "/v1/api_keys/"+k.ID, `{"credits":null}`); !strings.Contains(rec.Body.String(), `"credits":null`) {
		t.Fatalf("credits not cleared: %s", rec.Body)
	}
	for _, body := range []string{
		`{"name":"n","subject":"s","rate_limits":[{"name":"Bad Name","limit":1,"duration_ms":1000}]}`,
		`{"name":"n","subject":"s","rate_limits":[{"name":"a","limit":0,"duration_ms":1000}]}`,
		`{"name":"n","subject":"s","rate_limits":[{"name":"a","limit":1,"duration_ms":999}]}`,
		`{"name":"n","subject":"s","rate_limits":[{"name":"a","limit":1,"duration_ms":1000},{"name":"a","limit":2,"duration_ms":1000}]}`,
		`{"name":"n","subject":"s","rate_limits":[` + strings.Repeat(`{"name":"a","limit":1,"duration_ms":1000},`, 8) + `{"name":"b","limit":1,"duration_ms":1000}]}`,
		`{"name":"n","subject":"s","credits":{"remaining":-1}}`,
		`{"name":"n","subject":"s","credits":{"remaining":1,"refill":{"interval":"week","amount":1}}}`,
		`{"name":"n","subject":"s","credits":{"remaining":1,"refill":{"interval":"day","amount":1,"day_of_month":3}}}`,
	} {
		rec := e.do("POST", "/v1/api_keys", body)
		if rec.Code != 400 {
			t.Errorf("%s: %d, want 400", body, rec.Code)
			continue
		}
		if p := decodeError(t, rec).Param; p != "rate_limits" && p != "credits" {
			t.Errorf("%s: param %q", body, p)
		}
	}
}

// TestVerifyCostAndUsage spends credits through POST /v1/api_keys/verify
// with a cost, gets 429 api_key_usage_exceeded once they are out, and reads
// the history of those verifications, after a flush, to the count.
func TestVerifyCostAndUsage(t *testing.T) {
	e := newEnv(t)
	k := e.create(t, `{"name":"n","subject":"s","scopes":[],"credits":{"remaining":5},
		"rate_limits":[{"name":"default","limit":100,"duration_ms":60000}]}`)
	verify := func(body string) (int, string) {
		rec := e.do("POST", "/v1/api_keys/verify", body)
		return rec.Code, rec.Header().Get("RateLimit")
	}
	if code, rl := verify(`{"secret":"` + k.Secret + `","cost":3}`); code != 200 || rl != `"default";r=97;t=2` {
		t.Fatalf("cost 3: %d, RateLimit %q", code, rl)
	}
	if code, _ := verify(`{"secret":"` + k.Secret + `","cost":0}`); code != 400 {
		t.Fatalf("cost 0: %d", code)
	}
	rec := e.do("POST", "/v1/api_keys/verify", `{"secret":"`+k.Secret+`","cost":3}`)
	if rec.Code != 429 || decodeError(t, rec).Code != "api_key_usage_exceeded" {
		t.Fatalf("cost 3 of 2: %d %s", rec.Code, rec.Body)
	}
	for range 2 {
		if code, _ := verify(`{"secret":"` + k.Secret + `"}`); code != 200 {
			t.Fatal(code)
		}
	}
	if err := e.store.FlushUsage(context.Background()); err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now()
	q := "?granularity=minute&start=" + ms(now.Add(-time.Hour)) + "&end=" + ms(now.Add(time.Minute))
	rec = e.do("GET", "/v1/api_keys/"+k.ID+"/usage"+q, "")
	if rec.Code != 200 {
		t.Fatalf("usage: %d %s", rec.Code, rec.Body)
	}
	var u struct {
		Object      string
		ID          string
		Granularity string
		Data        []map[string]int64
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &u); err != nil || u.Object != "api_key_usage" || u.Granularity != "minute" || len(u.Data) < 61 || len(u.Data) > 62 {
		t.Fatalf("usage: object %q, granularity %q, %d buckets (want 61 or 62), %v", u.Object, u.Granularity, len(u.Data), err)
	}
	var valid, exceeded int64
	for _, p := range u.Data {
		valid += p["valid"]
		exceeded += p["usage_exceeded"]
	}
	if valid != 3 || exceeded != 1 {
		t.Fatalf("history: %d valid, %d usage_exceeded; want 3 and 1", valid, exceeded)
	}
	for _, bad := range []string{"?granularity=week", "?granularity=minute&start=" + ms(now.Add(-72*time.Hour)), "?start=x"} {
		if rec := e.do("GET", "/v1/api_keys/"+k.ID+"/usage"+bad, ""); rec.Code != 400 {
			t.Errorf("usage%s: %d, want 400", bad, rec.Code)
		}
	}
	if rec := e.do("GET", "/v1/api_keys/ak_00000000000000000000000000000000/usage", ""); rec.Code != 404 {
		t.Errorf("usage of an unknown key: %d", rec.Code)
	}
}

func ms(t time.Time) string { return json.Number(itoa(t.UnixMilli())).String() }

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
