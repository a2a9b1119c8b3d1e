package caddyfile_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-mtls/caddy-mtls"
)

// TestAdaptFixtures adapts every testdata/*.caddyfiletest (a Caddyfile, a
// line of dashes, the expected JSON) and compares the result.
func TestAdaptFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	sep := regexp.MustCompile(`(?m)^-{10,}\s*$`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parts := sep.Split(string(data), 2)
			if len(parts) != 2 {
				t.Fatal("fixture has no line of dashes")
			}
			caddytest.CompareAdapt(t, f, parts[0], "caddyfile", strings.TrimSpace(parts[1]))
		})
	}
}
