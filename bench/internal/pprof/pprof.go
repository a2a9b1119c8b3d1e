// Package pprof fetches profiles from a Caddy's admin endpoint for the
// benchmark tools.
package pprof

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// client bounds a fetch: a CPU profile takes its seconds, and then some.
var client = &http.Client{Timeout: 10 * time.Minute}

// Save fetches the profile of the Caddy whose admin endpoint is admin
// (host:port) into path: "profile?seconds=N" (CPU), "heap", "allocs".
func Save(admin, profile, path string) error {
	resp, err := client.Get("http://" + admin + "/debug/pprof/" + profile)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: status %d", profile, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
