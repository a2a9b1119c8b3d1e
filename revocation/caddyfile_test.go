package revocation_test

import (
	"encoding/json"
	"strings"
	"testing"

	cf "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-mtls/caddy-mtls/revocation"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		want  string // the config's JSON
	}{
		{"crl", "revocation {\n crl /a.crl\n}", `{"crl":["/a.crl"]}`},
		{"ocsp with unknown_cache", "revocation {\n mode strict\n ocsp\n ocsp_timeout 1s\n unknown_cache 30s\n}",
			`{"mode":"strict","ocsp":true,"ocsp_timeout":1000000000,"unknown_cache":30000000000}`},
		{"crl_from_certificates alone", "revocation {\n crl_from_certificates\n}", `{"crl_from_certificates":true}`},
		{"crl_from_certificates with bounds", "revocation {\n mode strict\n crl_from_certificates\n crl_timeout 3s\n crl_max_size 1MiB\n crl_cache_size 50\n}",
			`{"mode":"strict","crl_from_certificates":true,"crl_timeout":3000000000,"crl_max_size":1048576,"crl_cache_size":50}`},
		{"crl_max_size in bytes", "revocation {\n crl /a.crl\n crl_from_certificates\n crl_max_size 2048\n}",
			`{"crl":["/a.crl"],"crl_from_certificates":true,"crl_max_size":2048}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := cf.NewTestDispenser(tc.input)
			d.Next()
			rc := new(revocation.Config)
			err := rc.UnmarshalCaddyfile(d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(rc)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, input, want string
	}{
		{"unknown_cache without a value", "revocation {\n ocsp\n unknown_cache\n}", "wrong argument count"},
		{"unknown_cache two values", "revocation {\n ocsp\n unknown_cache 5s 10s\n}", "wrong argument count"},
		{"unknown_cache not a duration", "revocation {\n ocsp\n unknown_cache soon\n}", "invalid unknown_cache 'soon'"},
		{"unknown_cache zero", "revocation {\n ocsp\n unknown_cache 0s\n}", "invalid unknown_cache '0s'"},
		{"argument", "revocation strict {\n ocsp\n}", "wrong argument count"},
		{"unknown_cache twice", "revocation {\n ocsp\n unknown_cache 5s\n unknown_cache 5s\n}", "'unknown_cache' given twice"},
		{"crl_from_certificates with a value", "revocation {\n crl_from_certificates yes\n}", "wrong argument count"},
		{"crl_from_certificates twice", "revocation {\n crl_from_certificates\n crl_from_certificates\n}", "'crl_from_certificates' given twice"},
		{"crl_timeout not a duration", "revocation {\n crl_from_certificates\n crl_timeout soon\n}", "invalid crl_timeout 'soon'"},
		{"crl_timeout without a value", "revocation {\n crl_from_certificates\n crl_timeout\n}", "wrong argument count"},
		{"crl_max_size not a size", "revocation {\n crl_from_certificates\n crl_max_size big\n}", "invalid crl_max_size 'big'"},
		{"crl_max_size zero", "revocation {\n crl_from_certificates\n crl_max_size 0\n}", "invalid crl_max_size '0'"},
		{"crl_max_size two values", "revocation {\n crl_from_certificates\n crl_max_size 1MiB 2MiB\n}", "wrong argument count"},
		{"crl_cache_size not a number", "revocation {\n crl_from_certificates\n crl_cache_size many\n}", "invalid crl_cache_size 'many'"},
		{"crl_cache_size zero", "revocation {\n crl_from_certificates\n crl_cache_size 0\n}", "invalid crl_cache_size '0'"},
		{"no source", "revocation {\n mode strict\n crl_timeout 1s\n}", "revocation needs a crl or ocsp, or crl_from_certificates"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := cf.NewTestDispenser(tc.input)
			d.Next()
			err := new(revocation.Config).UnmarshalCaddyfile(d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
