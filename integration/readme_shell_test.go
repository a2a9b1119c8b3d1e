package integration

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// The README's shell blocks are run as written: TestReadmeShellInventory
// finds every ```sh block and holds each to a test that runs it, or to a line
// of readmeShellSkipped saying why it is not run; TestReadmeShellAdminAPI and
// TestReadmeShellCLI run the blocks of the management section with bash,
// against a Caddy started here, and check what each line stored.

// managementHeading is the section whose two shell blocks (the admin API's
// curl lines, then the `caddy mtls` lines) the tests of this file run.
const managementHeading = "## Management: `admin.api.mtls`, storage, `caddy mtls`"

// readmeShellRunBy names, by their README heading, the sections whose shell
// blocks are run by a test, and the test.
var readmeShellRunBy = map[string]string{
	"### 1. Certificates": "TestQuickstart (the openssl commands, with bash)",
	// `caddy run` is run in the quick start's folder, as its own process; the
	// curl lines with bash, their output compared with their comments.
	"### 3. Run it and call it":                       "TestQuickstart",
	managementHeading:                                 "TestReadmeShellAdminAPI (curl block), TestReadmeShellCLI (caddy mtls block)",
	"### Choreo Connect: mutual SSL from API callers": "TestMigrationChoreoConnect",
	"### Choreo: gateway-to-backend mutual TLS":       "TestMigrationChoreoBackend",
}

// readmeShellSkipped are the README's shell lines that no test runs, by
// section and line (comment removed), with the reason.
var readmeShellSkipped = map[[2]string]string{
	// A whole xcaddy build (minutes, and the module proxy). `make test` runs
	// the same build through scripts/build-caddy.sh (TestReadmeBuildLine keeps
	// the script and this line in step), and scripts/fresh-clone-check.sh runs
	// this line as written in a fresh clone.
	{"## Build", "xcaddy build v2.11.9 --with github.com/caddy-mtls/caddy-mtls=."}: "a full build; see scripts/fresh-clone-check.sh",
	// Builds ./caddy (minutes), then examples/demo.sh, whose Caddyfile
	// TestDemoRefusesUnauthenticated runs.
	{"## Set up and try it (from a clone)", "make demo"}: "a full build, then examples/demo.sh",
	// The suite that runs this test.
	{"## Set up and try it (from a clone)", "make test"}: "the test suite itself",
	// The file proxy shim for a module proxy answering 403, then the build
	// through it: minutes, and it needs a proxy that answers 403 to show
	// anything. scripts/build-caddy.sh sets up the same shim for every
	// build of `make test`; scripts/fresh-clone-check.sh runs these lines
	// when the proxy answers 403.
	{"### The module proxy answers 403 Forbidden", "shim=$(mktemp -d)"}:                                                               "the 403 shim, only for a build",
	{"### The module proxy answers 403 Forbidden", `mkdir -p "$shim/github.com/caddy-mtls/caddy-mtls/@v"`}:                            "the 403 shim, only for a build",
	{"### The module proxy answers 403 Forbidden", `: > "$shim/github.com/caddy-mtls/caddy-mtls/@v/list"`}:                            "the 403 shim, only for a build",
	{"### The module proxy answers 403 Forbidden", `export GOPROXY="file://$shim,$(go env GOPROXY)" GONOSUMDB=github.com/caddy-mtls`}: "the 403 shim, only for a build",
	{"### The module proxy answers 403 Forbidden", "xcaddy build v2.11.9 --with github.com/caddy-mtls/caddy-mtls=."}:                  "a full build through the shim",
}

// shellCommand is one command of a README shell block.
type shellCommand struct {
	text    string // continuation lines joined, comments removed
	comment string // the comment after it, if any
}

// shellCommands splits a README shell block into its commands. A command
// goes on over lines ending in `\` and over an open quote (kept as bash
// reads them), and over indented lines after a complete one (the README's
// usage lines, joined with a space). Comment-only lines are dropped.
func shellCommands(block string) []shellCommand {
	var out []shellCommand
	var cur *shellCommand
	var quote byte
	continued := false
	for _, line := range strings.Split(strings.TrimRight(block, "\n"), "\n") {
		open := quote != 0 || continued
		code, comment, q := shellLine(line, quote)
		quote = q
		continued = quote == 0 && strings.HasSuffix(code, `\`)
		switch {
		case cur != nil && open:
			cur.text += "\n" + code
		case strings.TrimSpace(code) == "":
			if cur != nil {
				out = append(out, *cur)
				cur = nil
			}
			continue
		case cur != nil && (line[0] == ' ' || line[0] == '\t'):
			cur.text += " " + strings.TrimSpace(code)
		default:
			if cur != nil {
				out = append(out, *cur)
			}
			cur = &shellCommand{text: code}
		}
		if comment != "" {
			cur.comment = comment
		}
	}
	if cur != nil {
		out = append(out, *cur)
	}
	return out
}

// shellLine splits a line into its code and its comment, reading quotes as
// bash does; quote is the quote open at its start, and the one open at its
// end is returned.
func shellLine(line string, quote byte) (code, comment string, _ byte) {
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
		case c == '\\':
			i++
		case quote == '"':
			if c == '"' {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return strings.TrimRight(line[:i], " \t"), strings.TrimSpace(line[i+1:]), 0
		}
	}
	return strings.TrimRight(line, " \t"), "", quote
}

// readmeText returns README.md.
func readmeText(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestReadmeShellInventory: every ```sh block of the README is in a section
// whose blocks a test runs, or each of its lines is listed, with its reason,
// in readmeShellSkipped; neither list names what is no longer there.
func TestReadmeShellInventory(t *testing.T) {
	readme := readmeText(t)
	found, skipped := 0, map[[2]string]bool{}
	inFence := false
	for _, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence || !regexp.MustCompile(`^#{2,3} `).MatchString(line) {
			continue
		}
		blocks := fencedBlocks(quickstartSection(t, readme, line), "sh")
		found += len(blocks)
		if _, ok := readmeShellRunBy[line]; ok {
			if len(blocks) == 0 {
				t.Errorf("readmeShellRunBy names %q, which has no sh block", line)
			}
			continue
		}
		for _, b := range blocks {
			for _, c := range shellCommands(b) {
				key := [2]string{line, c.text}
				if _, ok := readmeShellSkipped[key]; !ok {
					t.Errorf("README %s: %q is run by no test: run it (readme_shell_test.go) or list it in readmeShellSkipped with the reason", line, c.text)
				}
				skipped[key] = true
			}
		}
	}
	for heading := range readmeShellRunBy {
		if !strings.Contains(readme, "\n"+heading+"\n") {
			t.Errorf("readmeShellRunBy names %q, no longer a README heading", heading)
		}
	}
	for key := range readmeShellSkipped {
		if !skipped[key] {
			t.Errorf("readmeShellSkipped names %q under %q, no longer a README line there", key[1], key[0])
		}
	}
	if want := strings.Count(readme, "```sh\n"); found != want {
		t.Errorf("found %d sh blocks under ##/### headings, the README has %d", found, want)
	}
}

// shellEnv is a folder the README's commands run in, with `caddy` on PATH.
type shellEnv struct {
	dir string
	env []string
}

func newShellEnv(t *testing.T) *shellEnv {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "jq", "openssl", "sha256sum", "base64", "cut"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the README's lines need %s: %v", tool, err)
		}
	}
	bin := t.TempDir()
	if err := os.Symlink(caddyBin, filepath.Join(bin, "caddy")); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	return &shellEnv{
		dir: t.TempDir(),
		env: append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
			"HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home),
	}
}

// run runs command with bash in the folder.
func (s *shellEnv) run(command string) (stdout, stderr string, err error) {
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", command)
	cmd.Dir, cmd.Env = s.dir, s.env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// file writes a file of the folder.
func (s *shellEnv) file(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readmeCheck is what a README line must have done, checked after the only
// command that holds every string of match.
type readmeCheck struct {
	match []string
	check func(t *testing.T, stdout string)
}

// checksFor returns the checks of command, and counts them as used.
func checksFor(checks []readmeCheck, used []int, command string) []func(*testing.T, string) {
	var out []func(*testing.T, string)
	for i, c := range checks {
		all := true
		for _, m := range c.match {
			all = all && strings.Contains(command, m)
		}
		if all {
			used[i]++
			out = append(out, c.check)
		}
	}
	return out
}

func checkAllUsed(t *testing.T, checks []readmeCheck, used []int) {
	t.Helper()
	for i, c := range checks {
		if used[i] != 1 {
			t.Errorf("the check of the README line with %q matched %d commands, want 1", c.match, used[i])
		}
	}
}

// readmeShellPKI is what the management section's lines read.
type readmeShellPKI struct {
	acme, acmeNew, globex, win, gateway *demopki.Cert
}

func newReadmeShellPKI(t *testing.T, s *shellEnv) *readmeShellPKI {
	t.Helper()
	ca := demopki.Must(demopki.NewCA("Partners CA"))
	p := &readmeShellPKI{
		acme:    demopki.Must(ca.Issue(demopki.Options{CommonName: "acme"})),
		acmeNew: demopki.Must(ca.Issue(demopki.Options{CommonName: "acme"})),
		globex:  demopki.Must(ca.Issue(demopki.Options{CommonName: "globex"})),
		win:     demopki.Must(demopki.SelfSigned(demopki.Options{CommonName: "win-gateway"})),
		gateway: demopki.Must(demopki.SelfSigned(demopki.Options{CommonName: "own-gateway"})),
	}
	s.file(t, "acme.pem", p.acme.CertPEM())
	s.file(t, "acme-new.pem", p.acmeNew.CertPEM())
	s.file(t, "globex.pem", p.globex.CertPEM())
	s.file(t, "win.crt", p.win.Cert.Raw) // DER, as a Windows tool writes it
	s.file(t, "win-key.pem", p.win.KeyPEM())
	s.file(t, "gateway.pem", p.gateway.CertPEM())
	s.file(t, "gateway-key.pem", p.gateway.KeyPEM())
	return p
}

// storedClient returns the stored client alias, nil when there is none.
func storedClient(t *testing.T, c *caddyProc, alias string) *store.ClientInfo {
	t.Helper()
	res := doRaw(t, http.DefaultClient, "http://"+c.admin+"/mtls/clients")
	var list []store.ClientInfo
	if err := json.Unmarshal([]byte(res.body), &list); res.status != 200 || err != nil {
		t.Fatalf("GET /mtls/clients: %d %v\n%s", res.status, err, res.body)
	}
	for i := range list {
		if list[i].Alias == alias {
			return &list[i]
		}
	}
	return nil
}

// wantClient checks the stored client's tier, groups and certificates
// (oldest first).
func wantClient(t *testing.T, c *caddyProc, alias, tier string, groups []string, certs ...*demopki.Cert) {
	t.Helper()
	info := storedClient(t, c, alias)
	if info == nil {
		t.Fatalf("no stored client %q", alias)
	}
	var got, want []string
	for _, ci := range info.Certificates {
		got = append(got, ci.Fingerprint)
	}
	for _, cert := range certs {
		want = append(want, fingerprintHex(cert))
	}
	if len(info.Groups) == 0 {
		info.Groups = nil
	}
	if info.Tier != tier || !reflect.DeepEqual(info.Groups, groups) || !reflect.DeepEqual(got, want) {
		t.Fatalf("stored client %q: tier %q, groups %q, certificates %q; want %q, %q, %q", alias, info.Tier, info.Groups, got, tier, groups, want)
	}
}

// storedKeyPair returns the stored key pair's certificate and its listing,
// nil when there is none.
func storedKeyPair(t *testing.T, c *caddyProc, name string) (*x509.Certificate, *store.KeyPairInfo) {
	t.Helper()
	res := doRaw(t, http.DefaultClient, "http://"+c.admin+"/mtls/keypairs/"+name+"/certificate")
	if res.status == http.StatusNotFound {
		return nil, nil
	}
	cert, err := parseCertPEM([]byte(res.body))
	if res.status != 200 || err != nil {
		t.Fatalf("GET /mtls/keypairs/%s/certificate: %d %v\n%s", name, res.status, err, res.body)
	}
	res = doRaw(t, http.DefaultClient, "http://"+c.admin+"/mtls/keypairs")
	var list []store.KeyPairInfo
	if err := json.Unmarshal([]byte(res.body), &list); res.status != 200 || err != nil {
		t.Fatalf("GET /mtls/keypairs: %d %v\n%s", res.status, err, res.body)
	}
	for i := range list {
		if list[i].Name == name {
			return cert, &list[i]
		}
	}
	t.Fatalf("key pair %q has a certificate but is not listed", name)
	return nil, nil
}

// wantKeyPairFingerprint checks that the stored key pair is cert's.
func wantKeyPairFingerprint(t *testing.T, c *caddyProc, name string, cert *demopki.Cert) {
	t.Helper()
	got, _ := storedKeyPair(t, c, name)
	if got == nil || !bytes.Equal(got.Raw, cert.Cert.Raw) {
		t.Fatalf("key pair %q: not the uploaded certificate (%v)", name, got != nil)
	}
}

// generatedSubject is what the README's generate lines ask for, all fields
// given.
type generatedSubject struct {
	cn, o, ou, c, st, l string
	dns, ip, uri, email string
	days                int
	rsaBits             int // 0: P-256
}

func wantGenerated(t *testing.T, cert *x509.Certificate, want generatedSubject) {
	t.Helper()
	if cert == nil {
		t.Fatal("no certificate")
	}
	s := cert.Subject
	one := func(v []string) string { return strings.Join(v, ",") }
	got := generatedSubject{cn: s.CommonName, o: one(s.Organization), ou: one(s.OrganizationalUnit), c: one(s.Country),
		st: one(s.Province), l: one(s.Locality), dns: one(cert.DNSNames), email: one(cert.EmailAddresses),
		days: int(cert.NotAfter.Sub(cert.NotBefore).Round(24*time.Hour) / (24 * time.Hour))}
	for _, ip := range cert.IPAddresses {
		got.ip = ip.String()
	}
	for _, u := range cert.URIs {
		got.uri = u.String()
	}
	if k, ok := cert.PublicKey.(*rsa.PublicKey); ok {
		got.rsaBits = k.N.BitLen()
	}
	if got != want {
		t.Fatalf("generated certificate %+v, want %+v", got, want)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Fatalf("generated certificate: EKU %v, CA %v; want clientAuth only, not a CA", cert.ExtKeyUsage, cert.IsCA)
	}
}

// managementBlock returns the nth sh block of the management section.
func managementBlock(t *testing.T, n int) string {
	t.Helper()
	blocks := fencedBlocks(quickstartSection(t, readmeText(t), managementHeading), "sh")
	if len(blocks) != 2 {
		t.Fatalf("README %s: %d sh blocks, want 2 (the admin API's curl lines, then caddy mtls)", managementHeading, len(blocks))
	}
	return blocks[n]
}

// TestReadmeShellAdminAPI runs the management section's curl lines, in
// order, with the test's admin address for localhost:2019 and curl's
// status written out: each must exit 0 with 200, and leave in storage what
// it says (the rotation ends with the new certificate only, the generated
// key pairs have the subject fields given).
func TestReadmeShellAdminAPI(t *testing.T) {
	e := newEnv(t)
	c := startCaddy(t, e, `{"admin":{"listen":"{admin}"},"storage":{"module":"file_system","root":"`+filepath.Join(e.dir, "storage")+`"}}`, "json")
	s := newShellEnv(t)
	p := newReadmeShellPKI(t, s)

	aliases := func(t *testing.T, out string, want ...string) {
		t.Helper()
		var list []store.ClientInfo
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		got := []string{}
		for _, ci := range list {
			got = append(got, ci.Alias)
		}
		if want == nil {
			want = []string{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("listed %q, want %q", got, want)
		}
	}
	checks := []readmeCheck{
		{[]string{"-X PUT", `\"tier\": \"gold\"`}, func(t *testing.T, _ string) {
			wantClient(t, c, "acme", "gold", nil, p.acme)
		}},
		{[]string{"-X PUT", `\"groups\": [\"payments\"]`}, func(t *testing.T, _ string) {
			wantClient(t, c, "acme", "", []string{"payments"}, p.acme) // replaced: no tier now
		}},
		{[]string{"?group=payments"}, func(t *testing.T, out string) { aliases(t, out, "acme") }},
		{[]string{"?limit=100'"}, func(t *testing.T, out string) { aliases(t, out, "acme") }},
		{[]string{"?limit=100&after=acme"}, func(t *testing.T, out string) { aliases(t, out) }},
		{[]string{"-X POST", `\"clients\": [`}, func(t *testing.T, out string) {
			if strings.TrimSpace(out) != `{"stored":2}` {
				t.Fatalf("import answered %s", out)
			}
			wantClient(t, c, "acme", "gold", nil, p.acme)
			wantClient(t, c, "globex", "", nil, p.globex)
		}},
		{[]string{"-X POST", "/mtls/clients/acme/certificates"}, func(t *testing.T, _ string) {
			wantClient(t, c, "acme", "gold", nil, p.acme, p.acmeNew) // both accepted
		}},
		{[]string{"-X DELETE", "/mtls/clients/acme/certificates/"}, func(t *testing.T, _ string) {
			wantClient(t, c, "acme", "gold", nil, p.acmeNew) // the new one only
			wantClient(t, c, "globex", "", nil, p.globex)
		}},
		{[]string{"/mtls/keypairs/gateway -d"}, func(t *testing.T, _ string) {
			cert, info := storedKeyPair(t, c, "gateway")
			wantGenerated(t, cert, generatedSubject{cn: "gateway.example.com", days: 365})
			if info.KeyType != "p256" {
				t.Fatalf("key_type %q, want p256", info.KeyType)
			}
		}},
		{[]string{"/mtls/keypairs/choreo-gw"}, func(t *testing.T, _ string) {
			cert, info := storedKeyPair(t, c, "choreo-gw")
			wantGenerated(t, cert, generatedSubject{cn: "gw", o: "Acme", ou: "Payments", c: "LK", st: "Western", l: "Colombo",
				dns: "gw.example.com", ip: "192.0.2.10", uri: "spiffe://example.com/gw", email: "ops@example.com", days: 730, rsaBits: 2048})
			if info.KeyType != "rsa2048" || info.Subject != "CN=gw,OU=Payments,O=Acme,L=Colombo,ST=Western,C=LK" {
				t.Fatalf("listed %+v", info)
			}
		}},
		{[]string{"/mtls/keypairs/gateway/certificate > gateway.pem"}, func(t *testing.T, _ string) {
			data, err := os.ReadFile(filepath.Join(s.dir, "gateway.pem"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseCertPEM(data)
			stored, _ := storedKeyPair(t, c, "gateway")
			if err != nil || !bytes.Equal(got.Raw, stored.Raw) {
				t.Fatalf("gateway.pem is not the stored certificate (%v):\n%s", err, data)
			}
		}},
		{[]string{"/mtls/keypairs/win -H"}, func(t *testing.T, _ string) {
			wantKeyPairFingerprint(t, c, "win", p.win)
		}},
	}
	used := make([]int, len(checks))
	commands := shellCommands(managementBlock(t, 0))
	for _, cmd := range commands {
		if !strings.HasPrefix(cmd.text, "curl ") || !strings.Contains(cmd.text, "localhost:2019/") {
			t.Fatalf("README admin API line is not a curl call of localhost:2019: %s", cmd.text)
		}
		run := strings.Replace(cmd.text, "curl ", `curl -sS --max-time 30 -w '%{stderr}\nHTTP %{http_code}\n' `, 1)
		run = strings.ReplaceAll(run, "localhost:2019/", c.admin+"/")
		stdout, stderr, err := s.run(run)
		status := regexp.MustCompile(`HTTP (\d{3})\n$`).FindStringSubmatch(stderr)
		if err != nil || status == nil || status[1] != "200" {
			t.Fatalf("README line\n%s\nexit %v, status %v:\n%s%s", cmd.text, err, status, stdout, stderr)
		}
		for _, check := range checksFor(checks, used, cmd.text) {
			check(t, stdout)
		}
	}
	checkAllUsed(t, checks, used)
}

// TestReadmeShellCLI runs the management section's `caddy mtls` lines, in
// order, with every optional part given ([--x v] as --x v, its placeholder
// a real value) and --address of the test's Caddy where a line names no
// admin endpoint; lines whose comment shows a table are also run without
// their options, and print that table's header. Each must exit 0 and do
// what it says.
func TestReadmeShellCLI(t *testing.T) {
	e := newEnv(t)
	storage := filepath.Join(e.dir, "storage")
	c := startCaddy(t, e, `{"admin":{"listen":"{admin}"},"storage":{"module":"file_system","root":"`+storage+`"}}`, "json")
	s := newShellEnv(t)
	p := newReadmeShellPKI(t, s)

	// A second instance of the same storage, its admin endpoint on a unix
	// socket (a short path: such paths are limited to about 100 bytes).
	sockDir, err := os.MkdirTemp("", "mtlssh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "admin.sock")
	writeFile(t, filepath.Join(sockDir, "Caddyfile"), "{\n\tadmin unix/"+sock+"|0600\n\tstorage file_system "+storage+"\n}\n")
	var sockLogs syncBuffer
	run := exec.Command(caddyBin, "run", "--config", filepath.Join(sockDir, "Caddyfile"), "--adapter", "caddyfile")
	run.Env = append(os.Environ(), "HOME="+sockDir, "XDG_DATA_HOME="+sockDir, "XDG_CONFIG_HOME="+sockDir)
	run.Stdout, run.Stderr = &sockLogs, &sockLogs
	runProcess(t, "caddy (unix socket)", run, sockLogs.String)
	eventually(t, "the admin socket", func() error {
		_, err := os.Stat(sock)
		return err
	})
	// The config of `--config /etc/caddy/Caddyfile`: the test Caddy's admin.
	// Named Caddyfile, as there, so that the caddyfile adapter is assumed.
	config := filepath.Join(s.dir, "conf", "Caddyfile")
	if err := os.MkdirAll(filepath.Dir(config), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, config, "{\n\tadmin "+c.admin+"\n}\n")

	// inspect's certificate, header and chain header (the intermediates
	// that issued the leaf, the nearest first, as RFC 9440 orders them).
	clientsCA := demopki.Must(demopki.NewCA("Clients CA"))
	direct := demopki.Must(clientsCA.Issue(demopki.Options{CommonName: "direct"}))
	outer := demopki.Must(clientsCA.Issue(demopki.Options{CommonName: "Outer Intermediate", IsCA: true}))
	inner := demopki.Must(outer.Issue(demopki.Options{CommonName: "Inner Intermediate", IsCA: true}))
	chained := demopki.Must(inner.Issue(demopki.Options{CommonName: "chained"}))
	s.file(t, "clients-ca.pem", clientsCA.CertPEM())
	s.file(t, "cert.pem", direct.CertPEM())
	sf := func(c *demopki.Cert) string { return ":" + base64.StdEncoding.EncodeToString(c.Cert.Raw) + ":" }

	block := replaceAll(t, managementBlock(t, 1),
		"<fingerprint>", fingerprintHex(p.acme),
		"unix//run/caddy/admin.sock", "unix/"+sock,
		"/etc/caddy/Caddyfile", config,
		"--header ':MIIB...:' --chain ':MIIC...:, :MIID...:'", fmt.Sprintf("--header '%s' --chain '%s, %s'", sf(chained), sf(inner), sf(outer)),
		"--header ':MIIB...:'", "--header '"+sf(direct)+"'",
		"[--org O]", "[--org Acme]",
		"[--ou OU]", "[--ou Payments]",
		"[--country C]", "[--country LK]",
		"[--province ST]", "[--province Western]",
		"[--locality L]", "[--locality Colombo]",
		"[--dns name]", "[--dns gw.example.com]",
		"[--ip address]", "[--ip 192.0.2.10]",
		"[--uri URI]", "[--uri spiffe://example.com/gw]",
		"[--email address]", "[--email ops@example.com]",
	)
	optional := regexp.MustCompile(`\[([^\]]*)\](\.\.\.)?`)
	fullSubject := func(cn string) generatedSubject {
		return generatedSubject{cn: cn, o: "Acme", ou: "Payments", c: "LK", st: "Western", l: "Colombo",
			dns: "gw.example.com", ip: "192.0.2.10", uri: "spiffe://example.com/gw", email: "ops@example.com", days: 365}
	}
	readCert := func(t *testing.T, name string) *x509.Certificate {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := parseCertPEM(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return cert
	}
	// verified checks inspect's report: the certificate, where it was read
	// from, and that it verifies against clients-ca.pem.
	verified := func(cn, source string) func(*testing.T, string) {
		return func(t *testing.T, out string) {
			t.Helper()
			field := func(name string) string {
				m := regexp.MustCompile(`(?m)^` + name + `:\s+(.*)$`).FindStringSubmatch(out)
				if m == nil {
					return ""
				}
				return m[1]
			}
			if field("subject") != "CN="+cn || field("source") != source || !strings.HasPrefix(field("verifies"), "yes") {
				t.Fatalf("inspect of %s (%s) printed:\n%s", cn, source, out)
			}
		}
	}
	checks := []readmeCheck{
		{[]string{"clients add acme"}, func(t *testing.T, _ string) {
			wantClient(t, c, "acme", "gold", []string{"payments"}, p.acme)
		}},
		{[]string{"clients rotate acme"}, func(t *testing.T, _ string) {
			wantClient(t, c, "acme", "gold", []string{"payments"}, p.acme, p.acmeNew)
		}},
		{[]string{"clients remove-cert acme"}, func(t *testing.T, _ string) {
			wantClient(t, c, "acme", "gold", []string{"payments"}, p.acmeNew)
		}},
		{[]string{"clients remove acme"}, func(t *testing.T, _ string) {
			if storedClient(t, c, "acme") != nil {
				t.Fatal("acme still stored")
			}
		}},
		{[]string{"keypairs generate gateway"}, func(t *testing.T, _ string) {
			cert, info := storedKeyPair(t, c, "gateway")
			wantGenerated(t, cert, fullSubject("gateway.example.com"))
			if info.KeyType != "p256" {
				t.Fatalf("key type %q", info.KeyType)
			}
		}},
		{[]string{"keypairs upload gateway"}, func(t *testing.T, _ string) { wantKeyPairFingerprint(t, c, "gateway", p.gateway) }},
		{[]string{"keypairs upload win"}, func(t *testing.T, _ string) { wantKeyPairFingerprint(t, c, "win", p.win) }},
		{[]string{"keypairs download gateway --out gateway.pem"}, func(t *testing.T, _ string) {
			if !bytes.Equal(readCert(t, "gateway.pem").Raw, p.gateway.Cert.Raw) {
				t.Fatal("gateway.pem is not the stored key pair's certificate")
			}
		}},
		{[]string{"keypairs delete gateway"}, func(t *testing.T, _ string) {
			if cert, _ := storedKeyPair(t, c, "gateway"); cert != nil {
				t.Fatal("gateway still stored")
			}
		}},
		{[]string{"clients list --address unix/"}, func(t *testing.T, out string) {
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "ALIAS") {
				t.Fatalf("the instance on the socket lists (its storage has no client now):\n%s", out)
			}
		}},
		{[]string{"keypairs list --config"}, func(t *testing.T, out string) {
			tableRow(t, out, "win") // what the test's Caddy stores
		}},
		{[]string{"keygen --out ./pki --name gateway"}, func(t *testing.T, _ string) {
			wantGenerated(t, readCert(t, "pki/gateway.pem"), fullSubject("gateway.example.com"))
			if _, err := os.Stat(filepath.Join(s.dir, "pki/gateway-key.pem")); err != nil {
				t.Fatal(err)
			}
		}},
		{[]string{"keygen --demo --out ./pki"}, func(t *testing.T, _ string) {
			for _, name := range []string{"server-ca", "server", "clients-ca", "alice", "partner", "mallory"} {
				readCert(t, "pki/"+name+".pem")
			}
		}},
		{[]string{"inspect --ca clients-ca.pem cert.pem"}, verified("direct", "PEM file")},
		{[]string{"inspect --ca clients-ca.pem --header '" + sf(direct) + "'"}, verified("direct", "header, rfc9440")},
		{[]string{"inspect --ca clients-ca.pem --header", "--chain"}, verified("chained", "header, rfc9440")},
	}
	used := make([]int, len(checks))
	for _, cmd := range shellCommands(block) {
		if !strings.HasPrefix(cmd.text, "caddy mtls ") {
			t.Fatalf("README line is not a caddy mtls command: %s", cmd.text)
		}
		full := optional.ReplaceAllString(cmd.text, "$1")
		forms := []string{full}
		table := ""
		if cols, ok := strings.CutPrefix(cmd.comment, "table: "); ok {
			table = cols
			forms = append([]string{optional.ReplaceAllString(cmd.text, "")}, forms...)
		}
		for i, form := range forms {
			if strings.ContainsAny(form, "[]<>") || strings.Contains(form, "...") {
				t.Fatalf("README line %q: the test does not fill in all of %q", cmd.text, form)
			}
			words := strings.Fields(form)
			if (words[2] == "clients" || words[2] == "keypairs") && !strings.Contains(form, " --address ") && !strings.Contains(form, " --config ") {
				form += " --address " + c.admin
			}
			stdout, stderr, err := s.run(form)
			if err != nil {
				t.Fatalf("README line\n%s\nrun as %s: %v\n%s%s", cmd.text, form, err, stdout, stderr)
			}
			if table != "" && i == 0 {
				if header := strings.Fields(strings.SplitN(stdout, "\n", 2)[0]); strings.Join(header, " ") != table {
					t.Errorf("README line %q: the table's header is %q, the comment says %q", cmd.text, header, table)
				}
				continue
			}
			for _, check := range checksFor(checks, used, form) {
				check(t, stdout)
			}
		}
	}
	checkAllUsed(t, checks, used)
}
