package handler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/metrics"
)

// The request counters, made once, so that counting a request costs no
// lookup: accepted by source, rejected by reason and source.
var (
	acceptedCounters [certcheck.NumSources]prometheus.Counter
	rejectedCounters [certcheck.NumReasons][certcheck.NumSources]prometheus.Counter
)

func init() {
	for _, src := range certcheck.Sources() {
		acceptedCounters[src] = metrics.RequestCounter("accepted", "", src.String())
		for _, reason := range certcheck.Reasons() {
			rejectedCounters[reason][src] = metrics.RequestCounter("rejected", reason.String(), src.String())
		}
	}
}
