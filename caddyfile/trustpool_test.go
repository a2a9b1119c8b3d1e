package caddyfile_test

import (
	"strings"
	"testing"

	cf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddytls"

	mtlscaddyfile "github.com/caddy-mtls/caddy-mtls/caddyfile"
)

// TestTrustPoolPathWithoutSource: a trust pool written as a path, without
// its source module's name, says what to write instead.
func TestTrustPoolPathWithoutSource(t *testing.T) {
	for _, name := range []string{"trust_pool", "tls_trust_pool"} {
		d := cf.NewTestDispenser(name + " /etc/caddy/clients-ca.pem")
		d.Next()
		_, err := mtlscaddyfile.ParseTrustPool(d)
		if err == nil || !strings.Contains(err.Error(), "write '"+name+" file /etc/caddy/clients-ca.pem'") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	d := cf.NewTestDispenser("trust_pool file /etc/caddy/clients-ca.pem")
	d.Next()
	if _, err := mtlscaddyfile.ParseTrustPool(d); err != nil {
		t.Fatalf("trust_pool file: %v", err)
	}
}
