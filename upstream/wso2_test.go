package upstream

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// wso2Home lays out a WSO2 API Manager home as WSO2's documentation has it:
// <home>/repository/resources/security/client-truststore.jks (the backends'
// server CAs, password wso2carbon) and wso2carbon.jks (the gateway's key
// pair for backend B, passwords as the seed writes them), and the seed's
// multi_ssl_profiles.xml, verbatim but for its servers, at
// <home>/repository/deployment/server/. It returns the home, the XML's path
// and the address of a backend that asks for no client certificate (the
// seed's trust-store-only profile).
func (f *fixture) wso2Home(t *testing.T) (home, xmlPath, oneWay string) {
	t.Helper()
	home = filepath.Join(f.dir, "wso2am-4.5.0")
	security := filepath.Join(home, "repository", "resources", "security")
	deployment := filepath.Join(home, "repository", "deployment", "server")
	for _, dir := range []string{security, deployment} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	err := demopki.WriteJKS(filepath.Join(security, "client-truststore.jks"), "wso2carbon", "",
		demopki.JKSEntry{Alias: "backend-a", Cert: f.backendA.ServerCA},
		demopki.JKSEntry{Alias: "backend-b", Cert: f.backendB.ServerCA})
	if err != nil {
		t.Fatal(err)
	}
	err = demopki.WriteJKS(filepath.Join(security, "wso2carbon.jks"), "xxxxxx", "xxxxxx",
		demopki.JKSEntry{Alias: "wso2carbon", Cert: f.gwB, Key: true})
	if err != nil {
		t.Fatal(err)
	}

	// A backend of one-way TLS, its certificate from A's server CA.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "one-way")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{f.backendA.Server.TLSCertificate()}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	oneWay = net.JoinHostPort("localhost", fmt.Sprint(srv.Listener.Addr().(*net.TCPAddr).Port))

	seed, err := os.ReadFile(filepath.Join("testdata", "multi_ssl_profiles.xml"))
	if err != nil {
		t.Fatal(err)
	}
	xml := strings.NewReplacer("localhost:port", oneWay, "10.100.5.130:9444", f.backendB.Addr).Replace(string(seed))
	xmlPath = filepath.Join(deployment, "multi_ssl_profiles.xml")
	writeFile(t, xmlPath, xml)
	return home, xmlPath, oneWay
}

// TestWSO2SeedProfilesFile: WSO2's documented multi_ssl_profiles.xml, with
// its Locations relative to the WSO2 home, works as written once base_dir
// names that home.
func TestWSO2SeedProfilesFile(t *testing.T) {
	f := newFixture(t)
	home, path, oneWay := f.wso2Home(t)

	check := func(tr *Transport) {
		t.Helper()
		if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
			t.Fatalf("mutual SSL profile: %q %v", got, err)
		}
		if got, err := proxy(tr, oneWay, nil); err != nil || got != "one-way" {
			t.Fatalf("trust-store-only profile: %q %v", got, err)
		}
	}
	check(mustTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_base_dir":"`+home+`"}`))

	t.Setenv("CADDY_MTLS_TEST_APIM_HOME", home)
	check(mustTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_base_dir":"{env.CADDY_MTLS_TEST_APIM_HOME}"}`))

	// Without base_dir, Locations are taken from the file's own folder,
	// where WSO2's repository/ is not.
	if _, err := provisionTransport(t, `{"tls":{},"profiles_file":"`+path+`"}`); err == nil ||
		!strings.Contains(err.Error(), "client-truststore.jks") {
		t.Fatalf("without base_dir: %v", err)
	}
	for name, cfg := range map[string]string{
		"unset variable":       `{"profiles_file":"` + path + `","profiles_base_dir":"{env.CADDY_MTLS_TEST_UNSET_HOME}"}`,
		"missing directory":    `{"profiles_file":"` + path + `","profiles_base_dir":"` + filepath.Join(home, "nope") + `"}`,
		"a file, not a folder": `{"profiles_file":"` + path + `","profiles_base_dir":"` + path + `"}`,
		"no profiles_file":     `{"profiles_base_dir":"` + home + `"}`,
	} {
		if _, err := provisionTransport(t, cfg); err == nil || !strings.Contains(err.Error(), "profiles_base_dir") {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestProfilesFileJSONRelativePaths: relative paths in a JSON profiles file
// resolve against base_dir, by default the file's folder; absolute paths and
// paths that start with a placeholder are taken as written.
func TestProfilesFileJSONRelativePaths(t *testing.T) {
	f := newFixture(t)
	sub := filepath.Join(f.dir, "conf")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	rel := func(name string) string { return filepath.Join("..", filepath.Base(f.files[name])) }
	content := `{"profiles":[{"servers":["` + f.backendB.Addr + `"],
		"trust_pool":{"provider":"file","pem_files":["` + rel("serverCA-b") + `"]},
		"client_keystore":{"file":"` + rel("gwB.p12") + `","password":"p12pass"}},
		{"servers":["` + f.backendA.Addr + `"],
		"trust_pool":{"provider":"file","pem_files":["` + f.files["serverCA-a"] + `"]},
		"client_certificate_file":"` + rel("gwA") + `","client_key_file":"{env.CADDY_MTLS_TEST_GWA_KEY}"}]}`
	t.Setenv("CADDY_MTLS_TEST_GWA_KEY", f.files["gwA-key"])
	path := filepath.Join(sub, "profiles.json")
	writeFile(t, path, content)

	// Relative to the file's folder: conf/../x is the fixture's x.
	tr := mustTransport(t, `{"tls":{},"profiles_file":"`+path+`"}`)
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("keystore and trust pool relative to the file: %q %v", got, err)
	}

	// Relative to base_dir: the same file read from elsewhere.
	other := filepath.Join(t.TempDir(), "profiles.json")
	writeFile(t, other, content)
	tr = mustTransport(t, `{"tls":{},"profiles_file":"`+other+`","profiles_base_dir":"`+sub+`"}`)
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("relative to base_dir: %q %v", got, err)
	}

	profiles, _, err := parseProfilesFile([]byte(content), "/home/x")
	if err != nil {
		t.Fatal(err)
	}
	got := append(profiles[0].files(), profiles[1].files()...)
	want := []string{
		filepath.Join("/home", filepath.Base(f.files["gwB.p12"])),
		filepath.Join("/home", filepath.Base(f.files["serverCA-b"])),
		filepath.Join("/home", filepath.Base(f.files["gwA"])),
		f.files["gwA-key"], // taken as written, then its placeholder replaced
		f.files["serverCA-a"],
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("files %q, want %q", got, want)
	}
}

// TestWSO2UnappliedElementsLogged: elements and attributes of WSO2's format
// that the transport does not apply load, and are named in a warning, once
// per version of the file.
func TestWSO2UnappliedElementsLogged(t *testing.T) {
	f := newFixture(t)
	home, path, oneWay := f.wso2Home(t)
	tr := mustTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_base_dir":"`+home+`","profiles_reload":3600000000000}`)
	core, logs := observer.New(zapcore.DebugLevel)
	tr.logger = zap.New(core)

	seed, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	extended := strings.NewReplacer(
		`<parameter name="customSSLProfiles">`, `<parameter name="customSSLProfiles" locked="false">
<HostnameVerifier>AllowAll</HostnameVerifier>`,
		"<servers>"+f.backendB.Addr, `<SSLProtocol>TLSv1.2</SSLProtocol>
<servers>`+f.backendB.Addr,
		"<KeyPassword>xxxxxx</KeyPassword>", "<KeyPassword>xxxxxx</KeyPassword>\n<Alias secret=\"s3cret\">wso2carbon</Alias>",
	).Replace(string(seed))
	extended = strings.Replace(extended, "<profile>\n<servers>"+oneWay, `<profile novalidatecert="true">
<servers>`+oneWay, 1)
	extended = strings.Replace(extended, "<Password>wso2carbon</Password>\n</TrustStore>", "<Password>wso2carbon</Password>\n<KeyPassword>hunter2</KeyPassword>\n</TrustStore>", 1)
	writeFile(t, path, extended)
	tr.reload()
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("file with unapplied elements: %q %v", got, err)
	}

	want := map[string][]string{
		"":              {`<parameter locked>`, `<HostnameVerifier>`},
		oneWay:          {`<profile novalidatecert>`, `<TrustStore><KeyPassword>`},
		f.backendB.Addr: {`<SSLProtocol>`, `<KeyStore><Alias>`},
	}
	checkLines := func(when string) {
		t.Helper()
		var warned []observer.LoggedEntry
		for _, e := range logs.All() {
			if e.Level == zapcore.WarnLevel {
				warned = append(warned, e)
			}
		}
		if len(warned) != len(want) {
			t.Fatalf("%s: %d warnings, want %d: %v", when, len(warned), len(want), warned)
		}
		for _, e := range warned {
			fields := e.ContextMap()
			if fields["file"] != path || !strings.Contains(e.Message, "not applied") {
				t.Fatalf("%s: line %q %v", when, e.Message, fields)
			}
			var servers string
			if s, ok := fields["servers"].([]any); ok && len(s) > 0 {
				servers = fmt.Sprint(s[0])
			}
			names, _ := json.Marshal(fields["elements"])
			wantNames, _ := json.Marshal(want[servers])
			if string(names) != string(wantNames) {
				t.Fatalf("%s: servers %q: elements %s, want %s", when, servers, names, wantNames)
			}
			for _, secret := range []string{"hunter2", "s3cret", "TLSv1.2", "AllowAll"} {
				if strings.Contains(fmt.Sprint(fields), secret) {
					t.Fatalf("%s: line shows the value %q: %v", when, secret, fields)
				}
			}
		}
	}
	checkLines("new version")

	// The same version again, and the same file with a keystore it names
	// replaced: nothing new to say.
	tr.reload()
	ks := filepath.Join(home, "repository", "resources", "security", "wso2carbon.jks")
	rotated := demopki.Must(f.caB.Issue(demopki.Options{CommonName: "gateway-for-b-rotated"}))
	if err := demopki.WriteJKS(ks, "xxxxxx", "xxxxxx", demopki.JKSEntry{Alias: "wso2carbon", Cert: rotated, Key: true}); err != nil {
		t.Fatal(err)
	}
	tr.reload()
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b-rotated" {
		t.Fatalf("after the keystore changed: %q %v", got, err)
	}
	checkLines("same version")

	// The seed as written applies every element it has.
	logs.TakeAll()
	writeFile(t, path, string(seed))
	tr.reload()
	for _, e := range logs.All() {
		if e.Level == zapcore.WarnLevel {
			t.Fatalf("the seed: %s %v", e.Message, e.ContextMap())
		}
	}
}

func TestUnmarshalCaddyfileProfilesFileBaseDir(t *testing.T) {
	for input, want := range map[string]string{
		"ssl_profiles {\n profiles_file /opt/wso2am/repository/deployment/server/multi_ssl_profiles.xml reload 1h {\n base_dir {env.APIM_HOME}\n }\n}": `{"profiles_file":"/opt/wso2am/repository/deployment/server/multi_ssl_profiles.xml","profiles_reload":3600000000000,"profiles_base_dir":"{env.APIM_HOME}"}`,
		"ssl_profiles {\n profiles_file profiles.json {\n base_dir /etc/caddy\n }\n max_pools 3\n}":                                                    `{"profiles_file":"profiles.json","profiles_base_dir":"/etc/caddy","max_pools":3}`,
	} {
		var tr Transport
		if err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil {
			t.Fatalf("%s: %v", input, err)
		}
		got, _ := json.Marshal(&tr)
		var a, b any
		_ = json.Unmarshal(got, &a)
		_ = json.Unmarshal([]byte(want), &b)
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("%s:\ngot  %s\nwant %s", input, ja, jb)
		}
	}
	for input, want := range map[string]string{
		"ssl_profiles {\n profiles_file /p.xml {\n base_dir\n }\n}":                    "wrong argument count",
		"ssl_profiles {\n profiles_file /p.xml {\n base_dir /a /b\n }\n}":              "wrong argument count",
		"ssl_profiles {\n profiles_file /p.xml {\n base_dir /a\n base_dir /b\n }\n}":   "given twice",
		"ssl_profiles {\n profiles_file /p.xml {\n home /a\n }\n}":                     "unrecognized profiles_file subdirective 'home'",
		"ssl_profiles {\n profiles_file /p.xml reload 1m extra {\n base_dir /a\n }\n}": "wrong argument count",
	} {
		var tr Transport
		err := tr.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Testfile:") {
			t.Fatalf("%s: error %v, want %q with the line", input, err, want)
		}
	}
}

// TestWSO2CarbonHome: a Location written with WSO2's ${carbon.home} (as
// deployment.toml and WSO2's guides write paths) resolves against
// base_dir, the WSO2 home; another ${...} variable is an error naming it.
func TestWSO2CarbonHome(t *testing.T) {
	f := newFixture(t)
	home, path, oneWay := f.wso2Home(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	withVar := strings.ReplaceAll(string(data), "<Location>repository/", "<Location>${carbon.home}/repository/")
	if withVar == string(data) {
		t.Fatal("the seed's Locations are not relative to the WSO2 home")
	}
	writeFile(t, path, withVar)
	tr := mustTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_base_dir":"`+home+`"}`)
	if got, err := proxy(tr, f.backendB.Addr, nil); err != nil || got != "b gateway-for-b" {
		t.Fatalf("mutual SSL profile: %q %v", got, err)
	}
	if got, err := proxy(tr, oneWay, nil); err != nil || got != "one-way" {
		t.Fatalf("trust-store-only profile: %q %v", got, err)
	}
	writeFile(t, path, strings.ReplaceAll(withVar, "${carbon.home}", "${carbon.config.dir.path}"))
	if _, err := provisionTransport(t, `{"tls":{},"profiles_file":"`+path+`","profiles_base_dir":"`+home+`"}`); err == nil ||
		!strings.Contains(err.Error(), "${carbon.config.dir.path}") {
		t.Fatalf("another variable: %v", err)
	}
}
