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
