package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// thisUpdateDesc and nextUpdateDesc describe the CRLs in force, read when
// scraped: `time() - caddy_mtls_crl_this_update_timestamp_seconds` is a
// CRL's age; past its nextUpdate the certificates it covers have an
// unknown status.
var (
	thisUpdateDesc = prometheus.NewDesc("caddy_mtls_crl_this_update_timestamp_seconds",
		"When the CRL in force of a source (a configured crl, or a distribution point read with crl_from_certificates) was issued (its thisUpdate), as Unix seconds, by source; the earliest when several modules use the source.",
		[]string{"crl"}, nil)
	nextUpdateDesc = prometheus.NewDesc("caddy_mtls_crl_next_update_timestamp_seconds",
		"When the CRL in force of a source is to be replaced (its nextUpdate), as Unix seconds, by source; the earliest when several modules use the source. Past it, the certificates the CRL covers have an unknown revocation status. Not shown for a CRL without a nextUpdate.",
		[]string{"crl"}, nil)
)

// CRLLister calls add with each CRL in force: its source as logs and
// metrics name it, its thisUpdate and its nextUpdate (zero if it has none).
type CRLLister func(add func(crl string, thisUpdate, nextUpdate time.Time))

// crlTracker shows the CRLs in force of every revocation checker.
type crlTracker struct {
	owners[CRLLister]
}

var crls = new(crlTracker)

// TrackCRLs shows the CRLs in force of owner (a revocation checker), which
// list tells when scraped, until ForgetCRLs.
func TrackCRLs(owner any, list CRLLister) {
	crls.set(owner, list)
}

// ForgetCRLs stops showing owner's CRLs, when it stops keeping them
// current.
func ForgetCRLs(owner any) { crls.forget(owner) }

// Describe implements prometheus.Collector.
func (t *crlTracker) Describe(ch chan<- *prometheus.Desc) {
	ch <- thisUpdateDesc
	ch <- nextUpdateDesc
}

// Collect implements prometheus.Collector: per source, the earliest
// thisUpdate and the earliest nextUpdate of the CRLs in force, so that an
// alert sees the stalest.
func (t *crlTracker) Collect(ch chan<- prometheus.Metric) {
	type times struct{ this, next time.Time }
	bySource := map[string]*times{}
	for _, list := range t.values() { // outside the lock: a lister takes its checker's
		list(func(crl string, thisUpdate, nextUpdate time.Time) {
			cur := bySource[crl]
			if cur == nil {
				bySource[crl] = &times{thisUpdate, nextUpdate}
				return
			}
			if thisUpdate.Before(cur.this) {
				cur.this = thisUpdate
			}
			if !nextUpdate.IsZero() && (cur.next.IsZero() || nextUpdate.Before(cur.next)) {
				cur.next = nextUpdate
			}
		})
	}
	for crl, ts := range bySource {
		ch <- prometheus.MustNewConstMetric(thisUpdateDesc, prometheus.GaugeValue, float64(ts.this.Unix()), crl)
		if !ts.next.IsZero() {
			ch <- prometheus.MustNewConstMetric(nextUpdateDesc, prometheus.GaugeValue, float64(ts.next.Unix()), crl)
		}
	}
}
