package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// cacheEntriesDesc and cacheMaxDesc describe the size of client_cert_auth's
// verification caches, read when scraped.
var (
	cacheEntriesDesc = prometheus.NewDesc("caddy_mtls_verify_cache_entries",
		"Verdicts kept in client_cert_auth's verification cache, by HTTP server and handler (summed over the handlers of that name).",
		[]string{"server", "handler"}, nil)
	cacheMaxDesc = prometheus.NewDesc("caddy_mtls_verify_cache_max_entries",
		"The most verdicts client_cert_auth's verification cache keeps (its cache_size), by HTTP server and handler (summed over the handlers of that name).",
		[]string{"server", "handler"}, nil)
)

// cacheTracker shows the size of the verification cache of every handler
// instance that has one.
type cacheTracker struct {
	owners[trackedCache]
}

type trackedCache struct {
	server, handler string
	size            func() int
	max             int
}

var caches = new(cacheTracker)

// VerifyCache starts showing the size of owner's (a handler instance's)
// verification cache, of at most max entries, which size tells when
// scraped; and returns the counters of its hits and misses. server and
// handler are the labels of owner's requests.
func VerifyCache(owner any, server, handler string, size func() int, max int) (hits, misses prometheus.Counter) {
	caches.set(owner, trackedCache{server: server, handler: handler, size: size, max: max})
	return cacheHits.WithLabelValues(server, handler), cacheMisses.WithLabelValues(server, handler)
}

// ForgetVerifyCache stops showing owner's cache, when it is cleaned up.
func ForgetVerifyCache(owner any) { caches.forget(owner) }

// Describe implements prometheus.Collector.
func (t *cacheTracker) Describe(ch chan<- *prometheus.Desc) {
	ch <- cacheEntriesDesc
	ch <- cacheMaxDesc
}

// Collect implements prometheus.Collector: one series of each gauge per
// server and handler, summed over the instances (a config being replaced
// and its successor, or handlers given the same name).
func (t *cacheTracker) Collect(ch chan<- prometheus.Metric) {
	type sums struct{ entries, max int }
	byName := map[[2]string]*sums{}
	for _, c := range t.values() { // outside the lock: size takes the cache's
		k := [2]string{c.server, c.handler}
		s := byName[k]
		if s == nil {
			s = &sums{}
			byName[k] = s
		}
		s.entries += c.size()
		s.max += c.max
	}
	for k, s := range byName {
		ch <- prometheus.MustNewConstMetric(cacheEntriesDesc, prometheus.GaugeValue, float64(s.entries), k[0], k[1])
		ch <- prometheus.MustNewConstMetric(cacheMaxDesc, prometheus.GaugeValue, float64(s.max), k[0], k[1])
	}
}
