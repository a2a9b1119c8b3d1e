package caddymtls_test

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-mtls/caddy-mtls"
	"github.com/caddy-mtls/caddy-mtls/handler"
	"github.com/caddy-mtls/caddy-mtls/upstream"
)

// readmeBlock returns the first fenced block of lang after the heading.
func readmeBlock(t *testing.T, readme []byte, heading, lang string) []byte {
	t.Helper()
	re := regexp.MustCompile("(?s)" + regexp.QuoteMeta(heading) + "\n.*?```" + lang + "\n(.*?)```")
	m := re.FindSubmatch(readme)
	if m == nil {
		t.Fatalf("README has no %s block after %q", lang, heading)
	}
	return m[1]
}

// TestReadmeJSON checks that the README's JSON parses, is what `caddy adapt`
// makes of the README's Caddyfile example, and that its client_cert_auth
// handlers hold no field the handler does not know.
func TestReadmeJSON(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	caddyfile := readmeBlock(t, readme, "### Example", "caddyfile")
	documented := readmeBlock(t, readme, "### The same as JSON", "json")

	var want any
	if err := json.Unmarshal(documented, &want); err != nil {
		t.Fatalf("README JSON does not parse: %v", err)
	}
	adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(caddyfile, nil)
	if err != nil {
		t.Fatalf("README Caddyfile does not adapt: %v", err)
	}
	if len(warnings) > 0 {
		t.Fatalf("README Caddyfile adapts with warnings: %v", warnings)
	}
	var got any
	if err := json.Unmarshal(adapted, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("README JSON is not what the README Caddyfile adapts to; caddy adapt gives:\n%s", adapted)
	}

	found := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "client_cert_auth" {
				found++
				delete(v, "handler")
				raw, _ := json.Marshal(v)
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.DisallowUnknownFields()
				var h handler.Handler
				if err := dec.Decode(&h); err != nil {
					t.Errorf("README client_cert_auth JSON: %v", err)
				}
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
	walk(want)
	if found == 0 {
		t.Fatal("README JSON has no client_cert_auth handler")
	}
}

// TestReadmeProfilesFile checks that the README's profiles file example is
// a valid profiles file.
func TestReadmeProfilesFile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := readmeBlock(t, readme, "### `profiles_file`", "json")
	var doc struct {
		Profiles []upstream.Profile `json:"profiles"`
	}
	dec := json.NewDecoder(bytes.NewReader(block))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("README profiles file: %v", err)
	}
	if len(doc.Profiles) == 0 || len(doc.Profiles[0].Servers) == 0 || doc.Profiles[0].ClientKeystore == nil {
		t.Fatalf("README profiles file decoded to %+v", doc)
	}
}
