package metrics

import (
	"context"
	"slices"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCounters(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := Register(ctx); err != nil {
		t.Fatalf("registering twice: %v", err)
	}
	before := testutil.ToFloat64(requests.WithLabelValues("rejected", "revoked", "header"))
	RequestCounter("rejected", "revoked", "header").Inc()
	if got := testutil.ToFloat64(requests.WithLabelValues("rejected", "revoked", "header")) - before; got != 1 {
		t.Fatalf("revoked/header moved by %v", got)
	}
	Handshake("a:1", "default", false)
	if got := testutil.ToFloat64(handshakes.WithLabelValues("a:1", "default", "error")); got != 1 {
		t.Fatalf("handshake errors %v", got)
	}
	CRLUpdate("/etc/ca.crl", CRLOlder)
	if got := testutil.ToFloat64(crlUpdates.WithLabelValues("/etc/ca.crl", CRLOlder)); got != 1 {
		t.Fatalf("older CRLs %v", got)
	}
	before = testutil.ToFloat64(ocspAnswers.WithLabelValues(OCSPError))
	OCSPAnswer(OCSPError)
	if got := testutil.ToFloat64(ocspAnswers.WithLabelValues(OCSPError)) - before; got != 1 {
		t.Fatalf("OCSP errors moved by %v", got)
	}
}

// TestNames checks that Names lists every metric the plugin exports, and
// only those.
func TestNames(t *testing.T) {
	want := []string{
		"caddy_mtls_certificate_expiry_seconds",
		"caddy_mtls_certificate_not_after_timestamp_seconds",
		"caddy_mtls_crl_updates_total",
		"caddy_mtls_ocsp_answers_total",
		"caddy_mtls_panics_recovered_total",
		"caddy_mtls_profiles_file_rejections_total",
		"caddy_mtls_profiles_file_reloads_total",
		"caddy_mtls_requests_total",
		"caddy_mtls_upstream_handshakes_total",
	}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %q\nwant %q", got, want)
	}
}

// TestPanicsShownAtZero checks that both series of the panics counter exist
// before any panic, so that an alert on its increase sees the first one.
func TestPanicsShownAtZero(t *testing.T) {
	if n := testutil.CollectAndCount(safe.Panics); n != 2 {
		t.Fatalf("panics series: %d, want 2 (decode, background)", n)
	}
}
