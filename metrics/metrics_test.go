package metrics

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

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
	before := testutil.ToFloat64(requests.WithLabelValues("srv0", "payments", "rejected", "revoked", "header"))
	RequestCounter("srv0", "payments", "rejected", "revoked", "header").Inc()
	if got := testutil.ToFloat64(requests.WithLabelValues("srv0", "payments", "rejected", "revoked", "header")) - before; got != 1 {
		t.Fatalf("revoked/header moved by %v", got)
	}
	// Another handler of the server does not add up with it.
	if got := testutil.ToFloat64(requests.WithLabelValues("srv0", "orders", "rejected", "revoked", "header")); got != 0 {
		t.Fatalf("another handler's revoked/header: %v", got)
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
		"caddy_mtls_crl_next_update_timestamp_seconds",
		"caddy_mtls_crl_this_update_timestamp_seconds",
		"caddy_mtls_crl_updates_total",
		"caddy_mtls_ocsp_answers_total",
		"caddy_mtls_panics_recovered_total",
		"caddy_mtls_profiles_file_rejections_total",
		"caddy_mtls_profiles_file_reloads_total",
		"caddy_mtls_requests_total",
		"caddy_mtls_upstream_handshakes_total",
		"caddy_mtls_verify_cache_entries",
		"caddy_mtls_verify_cache_hits_total",
		"caddy_mtls_verify_cache_max_entries",
		"caddy_mtls_verify_cache_misses_total",
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

// TestVerifyCache checks the cache's counters and that its size shows per
// server and handler, summed over the instances of one name, until each is
// forgotten.
func TestVerifyCache(t *testing.T) {
	a, b, other := new(int), new(int), new(int)
	hits, misses := VerifyCache(a, "srv0", "payments", func() int { return 3 }, 10)
	VerifyCache(b, "srv0", "payments", func() int { return 4 }, 10) // the next config's
	VerifyCache(other, "srv1", "client_cert_auth", func() int { return 1 }, 5)
	defer ForgetVerifyCache(other)
	hits.Inc()
	hits.Inc()
	misses.Inc()
	if h, m := testutil.ToFloat64(cacheHits.WithLabelValues("srv0", "payments")), testutil.ToFloat64(cacheMisses.WithLabelValues("srv0", "payments")); h != 2 || m != 1 {
		t.Fatalf("hits %v misses %v, want 2 and 1", h, m)
	}
	want := `
# HELP caddy_mtls_verify_cache_entries ` + help(t, cacheEntriesDesc) + `
# TYPE caddy_mtls_verify_cache_entries gauge
caddy_mtls_verify_cache_entries{handler="client_cert_auth",server="srv1"} 1
caddy_mtls_verify_cache_entries{handler="payments",server="srv0"} 7
# HELP caddy_mtls_verify_cache_max_entries ` + help(t, cacheMaxDesc) + `
# TYPE caddy_mtls_verify_cache_max_entries gauge
caddy_mtls_verify_cache_max_entries{handler="client_cert_auth",server="srv1"} 5
caddy_mtls_verify_cache_max_entries{handler="payments",server="srv0"} 20
`
	if err := testutil.CollectAndCompare(caches, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	ForgetVerifyCache(a)
	ForgetVerifyCache(b)
	if n := testutil.CollectAndCount(caches, "caddy_mtls_verify_cache_entries"); n != 1 {
		t.Fatalf("%d entries series after forgetting srv0's caches, want 1", n)
	}
}

// TestCRLTimes checks that the CRLs in force show per source, the earliest
// times when several owners hold one, nextUpdate only when there is one.
func TestCRLTimes(t *testing.T) {
	day := time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)
	a, b := new(int), new(int)
	TrackCRLs(a, func(add func(string, time.Time, time.Time)) {
		add("/etc/ca.crl", day, day.Add(7*24*time.Hour))
		add("http://pki.example/none.crl", day, time.Time{})
	})
	TrackCRLs(b, func(add func(string, time.Time, time.Time)) {
		add("/etc/ca.crl", day.Add(-24*time.Hour), day.Add(6*24*time.Hour)) // an older one, still in force there
	})
	defer ForgetCRLs(b)
	want := `
# HELP caddy_mtls_crl_next_update_timestamp_seconds ` + help(t, nextUpdateDesc) + `
# TYPE caddy_mtls_crl_next_update_timestamp_seconds gauge
caddy_mtls_crl_next_update_timestamp_seconds{crl="/etc/ca.crl"} 1.8940608e+09
# HELP caddy_mtls_crl_this_update_timestamp_seconds ` + help(t, thisUpdateDesc) + `
# TYPE caddy_mtls_crl_this_update_timestamp_seconds gauge
caddy_mtls_crl_this_update_timestamp_seconds{crl="/etc/ca.crl"} 1.893456e+09
caddy_mtls_crl_this_update_timestamp_seconds{crl="http://pki.example/none.crl"} 1.8935424e+09
`
	if err := testutil.CollectAndCompare(crls, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	ForgetCRLs(a)
	if n := testutil.CollectAndCount(crls); n != 2 {
		t.Fatalf("%d series after forgetting an owner, want 2 (b's CRL)", n)
	}
}

// help returns a Desc's help text (Desc has no accessor).
func help(t *testing.T, d interface{ String() string }) string {
	t.Helper()
	s := d.String()
	_, rest, ok := strings.Cut(s, `help: "`)
	text, _, closed := strings.Cut(rest, `"`) // the help texts hold no quote
	if !ok || !closed {
		t.Fatalf("no help in %s", s)
	}
	return text
}
