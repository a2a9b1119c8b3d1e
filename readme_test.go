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

// TestReadmeBuildLine checks that the README's build line is the build
// scripts/build-caddy.sh runs: the same module path (go.mod's), the clone
// given as `=.`, the Caddy version go.mod requires; and that the published
// form and the 403 shim of Troubleshooting build the same.
func TestReadmeBuildLine(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("scripts/build-caddy.sh")
	if err != nil {
		t.Fatal(err)
	}
	module := regexp.MustCompile(`(?m)^module (\S+)$`).FindSubmatch(gomod)
	caddyVersion := regexp.MustCompile(`(?m)^\s*github\.com/caddyserver/caddy/v2 (v\S+)`).FindSubmatch(gomod)
	if module == nil || caddyVersion == nil {
		t.Fatal("go.mod names no module or no github.com/caddyserver/caddy/v2 version")
	}
	want := "xcaddy build " + string(caddyVersion[1]) + " --with " + string(module[1]) + "=."

	xcaddyLine := regexp.MustCompile(`(?m)^xcaddy build .*$`)
	got := xcaddyLine.Find(readmeBlock(t, readme, "## Build", "sh"))
	if string(got) != want {
		t.Errorf("README build line is %q, want %q", got, want)
	}
	if got := xcaddyLine.Find(readmeBlock(t, readme, "### The module proxy answers 403 Forbidden", "sh")); string(got) != want {
		t.Errorf("README Troubleshooting 403 shim builds with %q, want %q", got, want)
	}
	published := "xcaddy build " + string(caddyVersion[1]) + " --with " + string(module[1]) + "@<version>"
	if !bytes.Contains(readme, []byte(published)) {
		t.Errorf("README does not give the published form %q", published)
	}

	// The script builds the go.mod's Caddy version, with the checkout as the
	// module's replacement: the README's `=.` run from the clone.
	for _, re := range []string{
		`caddy_version=\$\(cd "\$here" && go list -m -f '\{\{\.Version\}\}' github\.com/caddyserver/caddy/v2\)`,
		`go tool xcaddy build "\$caddy_version"`,
		`--with "` + regexp.QuoteMeta(string(module[1])) + `=\$here"`,
	} {
		if !regexp.MustCompile(re).Match(script) {
			t.Errorf("scripts/build-caddy.sh no longer matches %s: keep it and the README's build line in step", re)
		}
	}
}
