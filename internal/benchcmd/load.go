package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// target is one HTTP endpoint under load: an address and the raw request
// sent to it again and again.
type target struct {
	name string
	addr string // host:port
	req  []byte
}

// newTarget builds a GET of path on addr with the given headers, keep-alive.
func newTarget(name, addr, path string, header http.Header) target {
	b := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: keygate-bench\r\n", path, addr)
	for k, vs := range header {
		for _, v := range vs {
			b = fmt.Appendf(b, "%s: %s\r\n", k, v)
		}
	}
	return target{name: name, addr: addr, req: append(b, "\r\n"...)}
}

// loadResult is one round of load against one target.
type loadResult struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
}

// hammer sends t's request for d from conns keep-alive connections, each
// sending the next request when the previous response is read (closed
// loop). Latency is from writing the request to reading the whole response.
// A response other than 200 counts as an error.
func hammer(t target, conns int, d time.Duration) loadResult {
	type worker struct {
		lat  []time.Duration
		errs int
	}
	ws := make([]worker, conns)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ws {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.lat = make([]time.Duration, 0, 4096)
			var c net.Conn
			var br *bufio.Reader
			for time.Now().Before(deadline) {
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", t.addr, time.Second); err != nil {
						w.errs++
						time.Sleep(time.Millisecond)
						continue
					}
					br = bufio.NewReaderSize(c, 16<<10)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				t0 := time.Now()
				ok, keep := roundTrip(c, br, t.req)
				if ok {
					w.lat = append(w.lat, time.Since(t0))
				} else {
					w.errs++
				}
				if !keep {
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Close()
			}
		}(&ws[i])
	}
	wg.Wait()
	took := time.Since(start)
	var all []time.Duration
	res := loadResult{}
	for _, w := range ws {
		all = append(all, w.lat...)
		res.errors += w.errs
	}
	slices.Sort(all)
	res.rps = float64(len(all)) / took.Seconds()
	res.p50, res.p99 = percentile(all, 50), percentile(all, 99)
	return res
}

// roundTrip writes req and reads the response to its end. It reports
// whether the response was a 200, and whether the connection can carry
// another request.
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) (ok, keep bool) {
	if _, err := c.Write(req); err != nil {
		return false, false
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, false
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err == nil && resp.StatusCode == http.StatusOK, err == nil && !resp.Close
}

// compareLoad runs rounds of load on base and kg in turn (the order
// alternating from round to round), after a short warm-up of each, and
// returns each round's results.
func compareLoad(base, kg target, conns, rounds int, d time.Duration) (b, k []loadResult, err error) {
	return compareRuns(base.name, func(d time.Duration) loadResult { return hammer(base, conns, d) },
		kg.name, func(d time.Duration) loadResult { return hammer(kg, conns, d) }, rounds, d)
}

// compareRuns is compareLoad for any two loads: each runs for the
// duration it is given and reports what it did.
func compareRuns(baseName string, base func(time.Duration) loadResult, kgName string, kg func(time.Duration) loadResult,
	rounds int, d time.Duration) (b, k []loadResult, err error) {
	for _, w := range []struct {
		name string
		run  func(time.Duration) loadResult
	}{{baseName, base}, {kgName, kg}} {
		if r := w.run(d / 4); r.errors > 0 || r.rps == 0 {
			return nil, nil, fmt.Errorf("%s: %d failed requests in the warm-up", w.name, r.errors)
		}
	}
	for i := 0; i < rounds; i++ {
		if i%2 == 0 {
			b = append(b, base(d))
			k = append(k, kg(d))
		} else {
			k = append(k, kg(d))
			b = append(b, base(d))
		}
		if n := b[i].errors + k[i].errors; n > 0 {
			return nil, nil, fmt.Errorf("round %d: %d failed requests (%s %d, %s %d)", i+1, n, baseName, b[i].errors, kgName, k[i].errors)
		}
	}
	return b, k, nil
}

// loadRow summarises compareLoad's results: median throughput and p99 of
// each, and the medians of the rounds' ratios.
func loadRow(b, k []loadResult) (kgRPS, baseRPS, kgP99, baseP99, rpsRatio, p99Ratio float64) {
	var br, kr, bp, kp []float64
	for i := range b {
		br, kr = append(br, b[i].rps), append(kr, k[i].rps)
		bp, kp = append(bp, b[i].p99.Seconds()), append(kp, k[i].p99.Seconds())
	}
	return median(kr), median(br), median(kp), median(bp), median(ratios(kr, br)), median(ratios(kp, bp))
}
