package metrics

import (
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of certificates whose expiry is shown.
const (
	KindTrust   = "trust"   // a CA of a trust pool
	KindClient  = "client"  // a pinned or stored client
	KindKeyPair = "keypair" // an identity the gateway presents
	KindBackend = "backend" // a backend's certificate, as last seen
)

// notAfterDesc describes caddy_mtls_certificate_not_after_timestamp_seconds,
// what alerts and dashboards use (`... - time()` is the seconds left).
var notAfterDesc = prometheus.NewDesc("caddy_mtls_certificate_not_after_timestamp_seconds",
	"When a certificate the config uses expires (its notAfter), as Unix seconds, by kind (trust, client, keypair, backend) and name; the earliest when several modules use the same name.",
	[]string{"kind", "name"}, nil)

// expiryDesc describes caddy_mtls_certificate_expiry_seconds, kept for one
// release beside notAfterDesc.
var expiryDesc = prometheus.NewDesc("caddy_mtls_certificate_expiry_seconds",
	"Deprecated, to be removed in the next release: use caddy_mtls_certificate_not_after_timestamp_seconds - time(). Seconds until a certificate the config uses expires (negative once expired), by kind (trust, client, keypair, backend) and name.",
	[]string{"kind", "name"}, nil)

// expiryTracker holds the certificates of every module instance that uses
// some; when scraped it shows their notAfter and computes the seconds left.
type expiryTracker struct {
	mu     sync.Mutex
	owners map[any]map[string]map[string]time.Time // owner -> kind -> name -> not after
}

var expiry = &expiryTracker{owners: map[any]map[string]map[string]time.Time{}}

// SetExpiry sets the certificates of one kind that owner (a module
// instance) uses, replacing what it had set for that kind.
func SetExpiry(owner any, kind string, notAfter map[string]time.Time) {
	expiry.mu.Lock()
	defer expiry.mu.Unlock()
	expiry.kinds(owner)[kind] = notAfter
}

// SetOneExpiry sets one certificate of owner.
func SetOneExpiry(owner any, kind, name string, notAfter time.Time) {
	expiry.mu.Lock()
	defer expiry.mu.Unlock()
	kinds := expiry.kinds(owner)
	if kinds[kind] == nil {
		kinds[kind] = map[string]time.Time{}
	}
	kinds[kind][name] = notAfter
}

// kinds returns owner's certificates by kind, made if need be; t.mu is held.
func (t *expiryTracker) kinds(owner any) map[string]map[string]time.Time {
	kinds := t.owners[owner]
	if kinds == nil {
		kinds = map[string]map[string]time.Time{}
		t.owners[owner] = kinds
	}
	return kinds
}

// ForgetExpiry drops what owner set, when it is cleaned up.
func ForgetExpiry(owner any) {
	expiry.mu.Lock()
	defer expiry.mu.Unlock()
	delete(expiry.owners, owner)
}

// Describe implements prometheus.Collector.
func (t *expiryTracker) Describe(ch chan<- *prometheus.Desc) {
	ch <- notAfterDesc
	ch <- expiryDesc
}

// Collect implements prometheus.Collector: one series of each gauge per
// kind and name, the earliest expiry when several owners use the same name.
func (t *expiryTracker) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	earliest := map[[2]string]time.Time{}
	for _, kinds := range t.owners {
		for kind, names := range kinds {
			for name, notAfter := range names {
				k := [2]string{kind, name}
				if cur, ok := earliest[k]; !ok || notAfter.Before(cur) {
					earliest[k] = notAfter
				}
			}
		}
	}
	t.mu.Unlock()
	now := time.Now()
	for k, notAfter := range earliest {
		ch <- prometheus.MustNewConstMetric(notAfterDesc, prometheus.GaugeValue, float64(notAfter.Unix()), k[0], k[1])
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, notAfter.Sub(now).Seconds(), k[0], k[1])
	}
}

// Certificate is a certificate a module showed the expiry of.
type Certificate struct {
	Kind, Name string
	NotAfter   time.Time
}

// ExpiringBefore returns the certificates of owner that end before
// deadline, soonest first.
func ExpiringBefore(owner any, deadline time.Time) []Certificate {
	var list []Certificate
	expiry.mu.Lock()
	for kind, names := range expiry.owners[owner] {
		for name, notAfter := range names {
			if notAfter.Before(deadline) {
				list = append(list, Certificate{kind, name, notAfter})
			}
		}
	}
	expiry.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].NotAfter.Before(list[j].NotAfter) })
	return list
}
