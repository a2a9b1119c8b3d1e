// Package metrics holds this project's Prometheus collectors, registered in
// Caddy's metrics registry (shown at the admin endpoint's /metrics when the
// global `metrics` option is on).
package metrics

import (
	"errors"
	"regexp"
	"slices"

	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Results of reading a configured CRL, for CRLUpdate.
const (
	CRLOK    = "ok"    // read and in force
	CRLError = "error" // unreadable; the last one read stays
	CRLOlder = "older" // older than the one in force; refused
)

// Statuses of an OCSP query, for OCSPAnswer.
const (
	OCSPGood    = "good"
	OCSPRevoked = "revoked"
	OCSPUnknown = "unknown" // the responder does not know the certificate
	OCSPError   = "error"   // no usable answer
)

var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "requests_total",
		Help: "Requests judged by client_cert_auth, by HTTP server (as caddy_http_* name it), handler (its name option, else client_cert_auth, numbered from the second unnamed one of a server), result (accepted, rejected), reason and certificate source.",
	}, []string{"server", "handler", "result", "reason", "source"})

	cacheHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "verify_cache_hits_total",
		Help: "Verdicts of client_cert_auth served from its verification cache, by HTTP server and handler.",
	}, []string{"server", "handler"})

	cacheMisses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "verify_cache_misses_total",
		Help: "Verdicts of client_cert_auth that were not in its verification cache, so were made (and then kept), by HTTP server and handler.",
	}, []string{"server", "handler"})

	handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "upstream_handshakes_total",
		Help: "TLS handshakes of ssl_profiles with upstreams, by profile, client identity (an alias, or default) and result (ok, error).",
	}, []string{"profile", "identity", "result"})

	profilesFileReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "profiles_file_reloads_total",
		Help: "Changed versions of an ssl_profiles profiles file (or of a file it names), by result: ok (in force), rejected (refused; the last good one stays).",
	}, []string{"file", "result"})

	profilesFileRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "profiles_file_rejections_total",
		Help: "New versions of an ssl_profiles profiles file that were refused (the last good one stayed).",
	}, []string{"file"})

	crlUpdates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "crl_updates_total",
		Help: "Reads of configured CRLs (at start and at each reload), by source and result: ok (in force), error (unreadable; the last one stays), older (older than the one in force; refused, the newer one stays).",
	}, []string{"crl", "result"})

	ocspAnswers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "mtls", Name: "ocsp_answers_total",
		Help: "OCSP queries made (answers from the cache are not counted), by status: good, revoked, unknown (the responder does not know the certificate), error (no usable answer: unreachable, timeout, HTTP error, bad response).",
	}, []string{"status"})
)

// collectors are what Register adds.
var collectors = []prometheus.Collector{requests, cacheHits, cacheMisses, caches, handshakes, profilesFileRejections, profilesFileReloads, expiry, safe.Panics, crlUpdates, crls, ocspAnswers}

func init() {
	// Every series shows, at 0, before the first event: an alert on a
	// counter's increase does not see the step of a series that appears at 1.
	for _, status := range []string{OCSPGood, OCSPRevoked, OCSPUnknown, OCSPError} {
		ocspAnswers.WithLabelValues(status)
	}
	for _, where := range []string{"decode", "background"} {
		safe.Panics.WithLabelValues(where)
	}
}

// Register adds the collectors to the config's metrics registry. It may be
// called by every module of every config: a collector already there is
// fine.
func Register(ctx caddy.Context) error {
	registry := ctx.GetMetricsRegistry()
	if registry == nil {
		return nil
	}
	for _, c := range collectors {
		if err := registry.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// fqName finds a metric's name in a Desc's String (Desc has no accessor).
var fqName = regexp.MustCompile(`^Desc\{fqName: "([^"]+)"`)

// Names returns the names of the metrics Register adds, sorted: for tests
// that check that dashboards and alerts use only metrics that exist.
func Names() []string {
	ch := make(chan *prometheus.Desc, 16)
	go func() {
		for _, c := range collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	var names []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil { // TestNames sees one missing
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// RequestCounter returns the counter of requests judged by the
// client_cert_auth handler named handler of the HTTP server named server,
// with a result ("accepted" or "rejected"), a reason (empty when accepted)
// and a certificate source ("tls" or "header"). The handler makes its
// counters once, so that counting a request costs no lookup.
func RequestCounter(server, handler, result, reason, source string) prometheus.Counter {
	return requests.WithLabelValues(server, handler, result, reason, source)
}

// Handshake counts an upstream TLS handshake of a profile and identity.
func Handshake(profile, identity string, ok bool) {
	result := "ok"
	if !ok {
		result = "error"
	}
	handshakes.WithLabelValues(profile, identity, result).Inc()
}

// ProfilesFileRejected counts a refused version of a profiles file.
func ProfilesFileRejected(file string) {
	profilesFileRejections.WithLabelValues(file).Inc()
	profilesFileReloads.WithLabelValues(file, "rejected").Inc()
}

// ProfilesFileReloaded counts a new version of a profiles file put in force.
func ProfilesFileReloaded(file string) {
	profilesFileReloads.WithLabelValues(file, "ok").Inc()
}

// CRLUpdate counts a read of the configured CRL source crl with its result
// (CRLOK, CRLError or CRLOlder).
func CRLUpdate(crl, result string) {
	crlUpdates.WithLabelValues(crl, result).Inc()
}

// OCSPAnswer counts an OCSP query by its status (OCSPGood, OCSPRevoked,
// OCSPUnknown or OCSPError).
func OCSPAnswer(status string) {
	ocspAnswers.WithLabelValues(status).Inc()
}
