package caddymtls_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/metrics"
)

const (
	alertsFile     = "examples/prometheus/alerts.yml"
	alertsTestFile = "examples/prometheus/alerts_test.yml"
	dashboardFile  = "examples/grafana/dashboard.json"
)

// metricName matches a name of this plugin's metrics in an expression.
var metricName = regexp.MustCompile(`caddy_mtls_[a-z_]+`)

// TestPrometheusAlertsPromtool checks the example alerting rules with
// promtool, and runs their unit tests. promtool is part of the suite (the
// Debian package prometheus; .ci/run installs it): without it the test
// fails.
func TestPrometheusAlertsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is needed to test %s (Debian: apt-get install prometheus): %v", alertsFile, err)
	}
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertsTestFile}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestPrometheusAlertsEachTested checks that every alert of the example
// rules has a unit test where it fires and one where it does not.
func TestPrometheusAlertsEachTested(t *testing.T) {
	rules, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(alertsTestFile)
	if err != nil {
		t.Fatal(err)
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\w+)$`).FindAllSubmatch(rules, -1)
	if len(alerts) == 0 {
		t.Fatalf("no alert in %s", alertsFile)
	}
	fires := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*alertname: (\w+)\n\s*exp_alerts:\n\s*- `).FindAllSubmatch(tests, -1) {
		fires[string(m[1])] = true
	}
	silent := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*alertname: (\w+)\n\s*exp_alerts: \[\]`).FindAllSubmatch(tests, -1) {
		silent[string(m[1])] = true
	}
	for _, m := range alerts {
		name := string(m[1])
		if !fires[name] {
			t.Errorf("%s: no test in %s where it fires (alertname: then exp_alerts: with a list)", name, alertsTestFile)
		}
		if !silent[name] {
			t.Errorf("%s: no test in %s where it does not fire (alertname: then exp_alerts: [])", name, alertsTestFile)
		}
	}
}

// TestPrometheusAlertsUseExportedMetrics checks that the example rules name
// only metrics the plugin exports.
func TestPrometheusAlertsUseExportedMetrics(t *testing.T) {
	rules, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	exprs := regexp.MustCompile(`(?m)^\s*expr: (.*)$`).FindAllSubmatch(rules, -1)
	if len(exprs) == 0 {
		t.Fatalf("no expr in %s", alertsFile)
	}
	checkExported(t, alertsFile, string(rules))
}

// TestPrometheusCRLStaleOnCRLTimes checks that the stale-CRL alert reads
// the CRL in force's nextUpdate, not only whether reads fail.
func TestPrometheusCRLStaleOnCRLTimes(t *testing.T) {
	rules, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)- alert: MTLSCRLStale\n\s*expr: ([^\n]*)`).FindSubmatch(rules)
	if m == nil || !strings.Contains(string(m[1]), "caddy_mtls_crl_next_update_timestamp_seconds") {
		t.Fatalf("%s: MTLSCRLStale does not use caddy_mtls_crl_next_update_timestamp_seconds (%q)", alertsFile, m)
	}
}

// TestGrafanaDashboard checks that the example dashboard is JSON, queries
// the Prometheus data source chosen in its DS_PROMETHEUS variable, and that
// its panels' queries parse (promtool, which the suite needs) and name only
// metrics the plugin exports.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Title  string `json:"title"`
		Panels []struct {
			Title      string `json:"title"`
			Datasource struct {
				Type, UID string
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatal(err)
	}
	if dashboard.Title == "" || len(dashboard.Panels) == 0 {
		t.Fatalf("%s: no title or no panels", dashboardFile)
	}
	for _, p := range dashboard.Panels {
		if p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource uid %q, want ${DS_PROMETHEUS}", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, target := range p.Targets {
			if !metricName.MatchString(target.Expr) {
				t.Errorf("panel %q: query %q names no caddy_mtls_ metric", p.Title, target.Expr)
			}
			checkExported(t, "panel "+p.Title, target.Expr)
		}
	}
	// Any other query the file holds (templating, annotations) too.
	checkExported(t, dashboardFile, string(data))

	// Operators find requests by server and handler, and each handler's
	// cache hit ratio.
	var byHandler, hitRatio bool
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			byHandler = byHandler || strings.Contains(target.Expr, "by (server, handler") && strings.Contains(target.Expr, "caddy_mtls_requests_total")
			hitRatio = hitRatio || strings.Contains(target.Expr, "caddy_mtls_verify_cache_hits_total") && strings.Contains(target.Expr, "caddy_mtls_verify_cache_misses_total")
		}
	}
	if !byHandler || !hitRatio {
		t.Errorf("%s: requests by server and handler shown: %v; cache hit ratio shown: %v", dashboardFile, byHandler, hitRatio)
	}

	// The queries parse: promtool checks them as recording rules, with
	// Grafana's variables replaced by values.
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*", "$server", ".*", "$handler", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			expr, err := json.Marshal(grafanaVars.Replace(target.Expr)) // a JSON string is a YAML string
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&rules, "      - record: dashboard:query\n        expr: %s\n", expr)
		}
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is needed to check the queries of %s (Debian: apt-get install prometheus): %v", dashboardFile, err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("%s: a query does not parse: %v\n%s", dashboardFile, err, out)
	}
}

// checkExported fails t for each caddy_mtls_ name in text that the plugin
// does not export.
func checkExported(t *testing.T, where, text string) {
	t.Helper()
	exported := metrics.Names()
	for _, name := range metricName.FindAllString(text, -1) {
		if !slices.Contains(exported, name) {
			t.Errorf("%s: %s is not a metric the plugin exports (%v)", where, name, exported)
		}
	}
}
