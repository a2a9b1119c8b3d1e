package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

func (f *fixture) profilesJSON(addr, serverCA string) string {
	return `{"profiles":[{"servers":["` + addr + `"],
		"trust_pool":{"provider":"file","pem_files":["` + serverCA + `"]},
		"client_keystore":{"file":"` + f.files["gwB.p12"] + `","password":"p12pass"}}]}`
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestProfilesFileJSONReload(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(f.dir, "profiles.json")
	writeFile(t, path, f.profilesJSON(f.backendB.Addr, f.files["serverCA-b"]))
	tr := mustTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_reload":3600000000000}`)
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("from the file: %q %v", got, err)
	}

	// A broken file: the last good profiles stay.
	for _, broken := range []string{
		`{"profiles":[{"servers":["` + f.backendB.Addr + `"],"trust_pol":{}}]}`,
		`{"profiles":[`,
		strings.Replace(f.profilesJSON(f.backendB.Addr, f.files["serverCA-b"]), "p12pass", "wrong", 1),
		`<parameter name="customSSLProfiles"></parameter>`,
	} {
		writeFile(t, path, broken)
		tr.reload()
		if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
			t.Fatalf("after a broken file %.60q: %q %v", broken, got, err)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	tr.reload()
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("after the file vanished: %q %v", got, err)
	}

	// A good new file takes effect: now B's profile trusts the wrong CA.
	writeFile(t, path, f.profilesJSON(f.backendB.Addr, f.files["serverCA-a"]))
	tr.reload()
	if _, err := proxy(tr, f.backendB.Addr, nil); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("after the new file: %v", err)
	}
}

func TestProfilesFileWSO2(t *testing.T) {
	f := newFixture(t)
	trust := filepath.Join(f.dir, "client-truststore.jks")
	if err := demopki.WriteJKS(trust, "wso2carbon", "", demopki.JKSEntry{Alias: "backend-b", Cert: f.backendB.ServerCA}); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(f.dir, "wso2carbon.jks")
	if err := demopki.WriteJKS(keys, "wso2carbon", "keypass", demopki.JKSEntry{Alias: "wso2carbon", Cert: f.gwB, Key: true}); err != nil {
		t.Fatal(err)
	}
	// As WSO2's documentation writes it, with a relative Location that
	// has a line break in it.
	xml := `<?xml version="1.0" encoding="UTF-8"?>
<parameter name="customSSLProfiles">
<!-- For Mutual SSL Handshake configure both trust store and key store-->
<profile>
<servers>` + f.backendB.Addr + `, b.internal:9444</servers>
<TrustStore>
<Location>client-truststore.jks
</Location>
<Type>JKS</Type>
<Password>wso2carbon</Password>
</TrustStore>
<KeyStore>
<Location>wso2carbon.jks</Location>
<Type>JKS</Type>
<Password>wso2carbon</Password>
<KeyPassword>keypass</KeyPassword>
</KeyStore>
</profile>
</parameter>
`
	path := filepath.Join(f.dir, "multi_ssl_profiles.xml")
	writeFile(t, path, xml)
	tr := mustTransport(t, `{"tls":{},"profiles_file":"`+path+`"}`)
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("WSO2 profile: %q %v", got, err)
	}
	if p := tr.profiles.Load().match("B.internal:9444"); p == nil {
		t.Fatal("second server of the WSO2 profile not matched")
	}

	for name, broken := range map[string]string{
		"wrong key password":  strings.Replace(xml, "<KeyPassword>keypass", "<KeyPassword>nope", 1),
		"missing trust store": strings.Replace(xml, "client-truststore.jks", "missing.jks", 1),
		"no servers":          strings.Replace(xml, f.backendB.Addr+`, b.internal:9444`, "", 1),
		"unclosed":            strings.TrimSuffix(strings.TrimSpace(xml), "</parameter>"),
	} {
		_, err := provisionTransport(t, `{"tls":{},"profiles_file":"`+writeTemp(t, f.dir, broken)+`"}`)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if !strings.Contains(err.Error(), "profiles_file") {
			t.Fatalf("%s: error %v does not name the file", name, err)
		}
	}

	// A key store that turns corrupt under the running transport, with a
	// chain length of 4 billion certificates (which, read as it says, would
	// end the process): the reload fails and the last good profiles serve.
	corrupt := []byte{0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'k', 0xFF, 0xFF, 0xFF, 0xFF}
	if err := os.WriteFile(keys, corrupt, 0o600); err != nil {
		t.Fatal(err)
	}
	tr.reload()
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("after the key store turned corrupt: %q %v", got, err)
	}
}

func writeTemp(t *testing.T, dir, content string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "profiles-*.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestProfilesFileKeystoreChange: replacing a keystore the file names is a
// change, though the file itself stays the same.
func TestProfilesFileKeystoreChange(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(f.dir, "profiles.json")
	writeFile(t, path, f.profilesJSON(f.backendB.Addr, f.files["serverCA-b"]))
	tr := mustTransport(t, `{"profiles_file":"`+path+`","profiles_reload":3600000000000}`)
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("before: %q %v", got, err)
	}
	rotated := demopki.Must(f.caB.Issue(demopki.Options{CommonName: "gateway-for-b-rotated"}))
	if err := rotated.WriteP12(f.files["gwB.p12"], "p12pass"); err != nil {
		t.Fatal(err)
	}
	tr.reload()
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b-rotated" {
		t.Fatalf("after the keystore changed: %q %v", got, err)
	}
}

func TestProfilesFileRefusals(t *testing.T) {
	f := newFixture(t)
	for name, content := range map[string]string{
		"trust pool needing the config": `{"profiles":[{"servers":["x.test:443"],"trust_pool":{"provider":"pki_root","authority":["local"]}}]}`,
		"unknown field":                 `{"profiles":[{"servers":["x.test:443"],"trust":{}}]}`,
		"null profile":                  `{"profiles":[null]}`,
		"trailing data":                 `{"profiles":[]} {}`,
	} {
		path := filepath.Join(f.dir, "bad.json")
		writeFile(t, path, content)
		if _, err := provisionTransport(t, `{"profiles_file":"`+path+`"}`); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
	// A file profile that takes a pattern of a configured profile: refused,
	// and the configured profiles and the last good file stay.
	path := filepath.Join(f.dir, "profiles.json")
	writeFile(t, path, f.profilesJSON("other.test:443", f.files["serverCA-b"]))
	cfg := strings.TrimSuffix(f.config(""), "}") + `,"profiles_file":"` + path + `","profiles_reload":3600000000000}`
	tr := mustTransport(t, cfg)
	writeFile(t, path, f.profilesJSON(f.backendA.Addr, f.files["serverCA-b"]))
	tr.reload()
	if got, err := proxy(tr, f.backendA.Addr, nil); err != nil || got != "a gateway-for-a" {
		t.Fatalf("after a clashing file: %q %v", got, err)
	}
	if tr.profiles.Load().match("other.test:443") == nil {
		t.Fatal("the last good file's profile is gone")
	}
}
