package upstream

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// TestReadmeEnvironments loads the README's one-Caddyfile-two-environments
// example: adapted, its transport keeps the {env.*} placeholders, and
// provisioned with DEPLOY_ENV set to each environment (its /etc/gw moved to
// a temp dir, its upstream to a test backend), it presents that
// environment's key pair.
func TestReadmeEnvironments(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)### One Caddyfile, several environments\n.*?```caddyfile\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no environments Caddyfile")
	}
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(m[1], nil)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("README environments Caddyfile: %v %v", err, warnings)
	}
	raw := findTransport(adapted)
	if raw == nil {
		t.Fatalf("no ssl_profiles transport in %s", adapted)
	}
	var tr Transport
	if err := json.Unmarshal(raw, &tr); err != nil {
		t.Fatal(err)
	}
	if len(tr.Profiles) != 1 || tr.Profiles[0].ClientKeystore == nil || !strings.Contains(tr.Profiles[0].ClientKeystore.File, "{env.DEPLOY_ENV}") {
		t.Fatalf("adapted transport %s", raw)
	}

	f := newFixture(t)
	for env, cert := range map[string]*demopki.Cert{"staging": f.alice, "prod": f.bob} {
		dir := filepath.Join(f.dir, "gw", env)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := cert.WriteP12(filepath.Join(dir, "gateway.p12"), env+"-pass"); err != nil {
			t.Fatal(err)
		}
		ca, err := os.ReadFile(f.files["serverCA-b"])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "payments-ca.pem"), string(ca))
	}
	config := strings.ReplaceAll(string(raw), "/etc/gw/", filepath.Join(f.dir, "gw")+"/")
	config = strings.ReplaceAll(config, "payments.internal:9444", f.backendB.Addr)
	for env, want := range map[string]string{"staging": "b alice-at-b", "prod": "b bob-at-b"} {
		t.Run(env, func(t *testing.T) {
			t.Setenv("DEPLOY_ENV", env)
			t.Setenv("P12_PASS", env+"-pass")
			tr := mustTransport(t, config)
			if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != want {
				t.Fatalf("%q %v, want %q", got, err, want)
			}
		})
	}
}

// findTransport returns the JSON of the first ssl_profiles transport in an
// adapted config, without its "protocol" key.
func findTransport(config []byte) []byte {
	var doc any
	if json.Unmarshal(config, &doc) != nil {
		return nil
	}
	var found []byte
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["protocol"] == "ssl_profiles" && found == nil {
				delete(v, "protocol")
				found, _ = json.Marshal(v)
				return
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(doc)
	return found
}
