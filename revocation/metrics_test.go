package revocation

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/crypto/ocsp"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/metrics"
)

// gauges returns the values of the project's gauge name by the value of
// label (absent series are absent from the map).
func gauges(t *testing.T, name, label string) map[string]float64 {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := metrics.Register(ctx); err != nil {
		t.Fatal(err)
	}
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					out[lp.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

// TestCRLTimesShown checks that while a checker watches its CRLs, the
// metrics show the thisUpdate and nextUpdate of those in force, configured
// and from distribution points, by source, and that they go when it stops.
func TestCRLTimesShown(t *testing.T) {
	f := newDPFixture(t)
	now := time.Now().Truncate(time.Second)
	configured := filepath.Join(f.dir, "configured.crl")
	writeCRL(t, configured, f.ca, 1, now.Add(-2*time.Hour), now.Add(time.Hour))
	writeCRL(t, f.crl, f.ca, 1, now.Add(-time.Hour), now.Add(2*time.Hour))
	c := newDPChecker(t, Config{CRLs: []string{configured}})
	// The distribution point's CRL is read on first use.
	if _, _, ok := c.checkDP(f.good.Cert, f.ca.Cert, now); !ok {
		t.Fatal("the distribution point's CRL was not read")
	}
	dp := f.srv.URL + "/ca.crl"

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.Watch(ctx)
	}()
	want := map[string][2]float64{
		configured: {float64(now.Add(-2 * time.Hour).Unix()), float64(now.Add(time.Hour).Unix())},
		dp:         {float64(now.Add(-time.Hour).Unix()), float64(now.Add(2 * time.Hour).Unix())},
	}
	var this, next map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		this = gauges(t, "caddy_mtls_crl_this_update_timestamp_seconds", "crl")
		next = gauges(t, "caddy_mtls_crl_next_update_timestamp_seconds", "crl")
		if _, ok := this[dp]; ok || time.Now().After(deadline) {
			break
		}
	}
	for src, w := range want {
		if this[src] != w[0] || next[src] != w[1] {
			t.Errorf("%s: thisUpdate %v nextUpdate %v, want %v", src, this[src], next[src], w)
		}
	}
	cancel()
	<-stopped
	this = gauges(t, "caddy_mtls_crl_this_update_timestamp_seconds", "crl")
	for src := range want {
		if _, ok := this[src]; ok {
			t.Errorf("%s still shown after the checker stopped", src)
		}
	}
}

// TestOCSPAnswersCounted checks that each OCSP query is counted once by
// its status, and that answers served from the cache are not.
func TestOCSPAnswersCounted(t *testing.T) {
	ca := demopki.Must(demopki.NewCA("OCSP CA"))
	good := demopki.Must(ca.Issue(demopki.Options{CommonName: "good"}))
	revoked := demopki.Must(ca.Issue(demopki.Options{CommonName: "revoked"}))
	unknown := demopki.Must(ca.Issue(demopki.Options{CommonName: "unknown"}))
	broken := demopki.Must(ca.Issue(demopki.Options{CommonName: "broken"}))
	status := map[string]int{good.Cert.SerialNumber.String(): ocsp.Good, revoked.Cert.SerialNumber.String(): ocsp.Revoked, unknown.Cert.SerialNumber.String(): ocsp.Unknown}
	certs := map[string]*demopki.Cert{good.Cert.SerialNumber.String(): good, revoked.Cert.SerialNumber.String(): revoked, unknown.Cert.SerialNumber.String(): unknown}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s, known := status[req.SerialNumber.String()]
		if !known {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Write(ocspResponse(t, ca, certs[req.SerialNumber.String()], s, time.Now().Add(time.Hour)))
	}))
	defer srv.Close()
	c, err := New(context.Background(), Config{OCSP: true, OCSPResponder: srv.URL}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	names := []string{metrics.OCSPGood, metrics.OCSPRevoked, metrics.OCSPUnknown, metrics.OCSPError}
	answers := func() map[string]float64 {
		out := map[string]float64{}
		for _, s := range names {
			out[s] = counter(t, "caddy_mtls_ocsp_answers_total", map[string]string{"status": s})
		}
		return out
	}
	before := answers()
	now := time.Now()
	for range 3 { // the second and third from the cache
		for _, cert := range []*demopki.Cert{good, revoked, unknown, broken} {
			c.Check(chain(cert, ca), now)
		}
	}
	after := answers()
	for _, s := range names {
		if got := after[s] - before[s]; got != 1 {
			t.Errorf("%s answers: %v counted, want 1", s, got)
		}
	}
}
