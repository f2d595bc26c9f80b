package adminapi

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the admin API's series (README.md, "Metrics"). The route label is
// a pattern such as "GET /api_keys/{id}", never a key ID.
type metrics struct {
	requests *prometheus.CounterVec // route, code
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "keygate",
			Name:      "admin_requests_total",
			Help:      "Admin API requests by route pattern and HTTP status code.",
		}, []string{"route", "code"}),
	}
	if reg != nil {
		if err := reg.Register(m.requests); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(route string, status int) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
}
