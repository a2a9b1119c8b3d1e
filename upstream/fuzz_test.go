package upstream

import "testing"

// FuzzParseProfilesFile: no profiles file, JSON or WSO2 XML, makes the
// parser panic. The seeds run with every `go test`.
func FuzzParseProfilesFile(f *testing.F) {
	for _, seed := range []string{
		`{"profiles":[{"servers":["a.internal:9444","*.b.example"],"trust_pool":{"provider":"file","pem_files":["ca.pem"]},
			"client_keystore":{"file":"gw.p12","password":"{env.P12_PASS}","alias":"{http.auth.user.alias}"},"tls_min_version":"tls1.2"}]}`,
		`{"profiles":[null]} {}`,
		`<?xml version="1.0" encoding="UTF-8"?>
<parameter name="customSSLProfiles">
<profile>
<servers>localhost:8081, b.internal:9444</servers>
<TrustStore><Location>repository/resources/security/client-truststore.jks</Location><Type>JKS</Type><Password>wso2carbon</Password></TrustStore>
<KeyStore><Location>repository/resources/security/wso2carbon.jks</Location><Type>JKS</Type><Password>wso2carbon</Password><KeyPassword>wso2carbon</KeyPassword></KeyStore>
</profile>
</parameter>`,
		"\ufeff<parameter><profile><servers>,,</servers></profile></parameter>",
		`<!DOCTYPE x [<!ENTITY a "aaaa">]><parameter>&a;</parameter>`,
		"",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		profiles, _, err := parseProfilesFile(data, dir)
		if err == nil {
			for _, p := range profiles {
				if p != nil {
					_ = p.files()
				}
			}
		}
	})
}
