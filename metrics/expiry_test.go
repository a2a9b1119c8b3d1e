package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestNotAfterTimestamp checks the gauge of notAfter as Unix seconds: one
// value per kind and name, the earliest when several owners show the same
// certificate, gone when its owners forget it; and that the seconds-left
// gauge is still served beside it.
func TestNotAfterTimestamp(t *testing.T) {
	a, b := new(int), new(int)
	t.Cleanup(func() { ForgetExpiry(a); ForgetExpiry(b) })
	early := time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)
	late := time.Date(2032, 6, 1, 0, 0, 0, 0, time.UTC)
	SetExpiry(a, KindTrust, map[string]time.Time{"root-ca": late})
	SetExpiry(b, KindTrust, map[string]time.Time{"root-ca": early})
	SetOneExpiry(a, KindBackend, "api:443", late)

	registry := prometheus.NewPedanticRegistry()
	registry.MustRegister(expiry)
	want := `
# HELP caddy_mtls_certificate_not_after_timestamp_seconds When a certificate the config uses expires (its notAfter), as Unix seconds, by kind (trust, client, keypair, backend) and name; the earliest when several modules use the same name.
# TYPE caddy_mtls_certificate_not_after_timestamp_seconds gauge
caddy_mtls_certificate_not_after_timestamp_seconds{kind="backend",name="api:443"} 1.9696608e+09
caddy_mtls_certificate_not_after_timestamp_seconds{kind="trust",name="root-ca"} 1.9301328e+09
`
	if err := testutil.GatherAndCompare(registry, strings.NewReader(want), "caddy_mtls_certificate_not_after_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(expiry, "caddy_mtls_certificate_expiry_seconds"); n != 2 {
		t.Fatalf("expiry_seconds series: %d, want 2", n)
	}

	ForgetExpiry(b)
	want = `
# HELP caddy_mtls_certificate_not_after_timestamp_seconds When a certificate the config uses expires (its notAfter), as Unix seconds, by kind (trust, client, keypair, backend) and name; the earliest when several modules use the same name.
# TYPE caddy_mtls_certificate_not_after_timestamp_seconds gauge
caddy_mtls_certificate_not_after_timestamp_seconds{kind="backend",name="api:443"} 1.9696608e+09
caddy_mtls_certificate_not_after_timestamp_seconds{kind="trust",name="root-ca"} 1.9696608e+09
`
	if err := testutil.GatherAndCompare(registry, strings.NewReader(want), "caddy_mtls_certificate_not_after_timestamp_seconds"); err != nil {
		t.Fatalf("after forgetting the owner of the earlier one: %v", err)
	}
	ForgetExpiry(a)
	if n := testutil.CollectAndCount(expiry); n != 0 {
		t.Fatalf("series after every owner forgot: %d", n)
	}
}
