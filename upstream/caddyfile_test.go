package upstream

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct{ name, input, want string }{
		{"profiles and base options", `ssl_profiles {
			dial_timeout 5s
			tls_trust_pool file /base-ca.pem
			profile a.internal:9444 {
				tls_trust_pool file /a-ca.pem
				tls_client_auth /gw.pem /gw-key.pem
				tls_server_name a.example
				tls_min_version tls1.3
			}
			profile *.partner.example:443 b.partner.example {
				tls_client_keystore /clients.jks type jks password {env.KS_PASS} key_password k alias {http.auth.user.alias}
				tls_insecure_skip_verify
			}
			profiles_file /profiles.json reload 30s
			max_pools 10
		}`, `{"dial_timeout":5000000000,
			"tls":{"ca":{"pem_files":["/base-ca.pem"],"provider":"file"}},
			"profiles":[
				{"servers":["a.internal:9444"],"trust_pool":{"pem_files":["/a-ca.pem"],"provider":"file"},
				 "client_certificate_file":"/gw.pem","client_key_file":"/gw-key.pem","server_name":"a.example","min_version":"tls1.3"},
				{"servers":["*.partner.example:443","b.partner.example"],
				 "client_keystore":{"file":"/clients.jks","type":"jks","password":"{env.KS_PASS}","key_password":"k","alias":"{http.auth.user.alias}"},
				 "insecure_skip_verify":true}],
			"profiles_file":"/profiles.json","profiles_reload":30000000000,"max_pools":10}`},
		{"file only", "ssl_profiles {\n profiles_file /etc/caddy/multi_ssl_profiles.xml\n}", `{"profiles_file":"/etc/caddy/multi_ssl_profiles.xml"}`},
		{"profile revocation", "ssl_profiles {\n profile a:1 {\n revocation {\n crl /a.crl\n leaf_only\n }\n }\n}", `{"profiles":[{"servers":["a:1"],"revocation":{"crl":["/a.crl"],"leaf_only":true}}]}`},
		{"stored key pair", "ssl_profiles {\n keypair_refresh 10s\n profile a:1 {\n tls_client_keypair gw\n }\n}", `{"keypair_refresh":10000000000,"profiles":[{"servers":["a:1"],"client_keypair":"gw"}]}`},
		{"verify hostname", "ssl_profiles {\n tls_verify_hostname off\n profile a:1 {\n tls_verify_hostname on\n }\n profile b:1 {\n tls_verify_hostname off\n }\n}",
			`{"verify_hostname":false,"profiles":[{"servers":["a:1"],"verify_hostname":true},{"servers":["b:1"],"verify_hostname":false}]}`},
		{"empty", "ssl_profiles", `{}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tr Transport
			if err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input)); err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(&tr)
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			_ = json.Unmarshal(got, &a)
			if err := json.Unmarshal([]byte(tc.want), &b); err != nil {
				t.Fatal(err)
			}
			ja, _ := json.Marshal(a)
			jb, _ := json.Marshal(b)
			if string(ja) != string(jb) {
				t.Fatalf("got  %s\nwant %s", ja, jb)
			}
		})
	}
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	tests := []struct{ name, input, want string }{
		{"argument", "ssl_profiles foo", "wrong argument count"},
		{"unknown base option", "ssl_profiles {\n no_such_option 1\n}", "unrecognized subdirective no_such_option"},
		{"profile without servers", "ssl_profiles {\n profile {\n }\n}", "at least one server pattern"},
		{"malformed pattern", "ssl_profiles {\n profile a*.b:1\n}", "malformed"},
		{"bad port", "ssl_profiles {\n profile a.b:99999\n}", "not a port number"},
		{"unknown profile subdirective", "ssl_profiles {\n profile a:1 {\n tls_trust file /a\n }\n}", "unrecognized profile subdirective 'tls_trust'"},
		{"repeated profile subdirective", "ssl_profiles {\n profile a:1 {\n tls_server_name x\n tls_server_name y\n }\n}", "'tls_server_name' given twice"},
		{"client auth one file", "ssl_profiles {\n profile a:1 {\n tls_client_auth /gw.pem\n }\n}", "wrong argument count"},
		{"keystore odd options", "ssl_profiles {\n profile a:1 {\n tls_client_keystore /k.p12 password\n }\n}", "want <file> followed by"},
		{"keystore unknown option", "ssl_profiles {\n profile a:1 {\n tls_client_keystore /k.p12 pass x\n }\n}", "unknown option 'pass'"},
		{"keystore repeated option", "ssl_profiles {\n profile a:1 {\n tls_client_keystore /k.p12 alias x alias y\n }\n}", "'alias' given twice"},
		{"old tls version", "ssl_profiles {\n profile a:1 {\n tls_min_version tls1.0\n }\n}", "invalid tls_min_version 'tls1.0'"},
		{"insecure with argument", "ssl_profiles {\n profile a:1 {\n tls_insecure_skip_verify yes\n }\n}", "wrong argument count"},
		{"profiles_file twice", "ssl_profiles {\n profiles_file /a\n profiles_file /b\n}", "'profiles_file' given twice"},
		{"profiles_file bad reload", "ssl_profiles {\n profiles_file /a reload soon\n}", "invalid reload interval 'soon'"},
		{"profiles_file stray word", "ssl_profiles {\n profiles_file /a every 1m\n}", "expected 'reload <interval>'"},
		{"keypair without name", "ssl_profiles {\n profile a:1 {\n tls_client_keypair\n }\n}", "wrong argument count"},
		{"keypair_refresh bad", "ssl_profiles {\n keypair_refresh often\n}", "invalid keypair_refresh 'often'"},
		{"verify hostname bad value", "ssl_profiles {\n profile a:1 {\n tls_verify_hostname no\n }\n}", "invalid tls_verify_hostname 'no': want on or off"},
		{"verify hostname no value", "ssl_profiles {\n profile a:1 {\n tls_verify_hostname\n }\n}", "wrong argument count"},
		{"verify hostname twice", "ssl_profiles {\n tls_verify_hostname off\n tls_verify_hostname on\n}", "'tls_verify_hostname' given twice"},
		{"base verify hostname bad value", "ssl_profiles {\n tls_verify_hostname false\n}", "invalid tls_verify_hostname 'false': want on or off"},
		{"max_pools zero", "ssl_profiles {\n max_pools 0\n}", "invalid max_pools '0'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tr Transport
			err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Testfile:") {
				t.Fatalf("error %q does not name the line", err)
			}
		})
	}
}
