package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-mtls/caddy-mtls/store"
)

// cliResult is what a run of the caddy binary gave.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs `caddy <args>` and returns its output and exit status.
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(caddyBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running caddy %v: %v", args, err)
	}
	return cliResult{stdout.String(), stderr.String(), code}
}

// wantCLI runs `caddy <args>` and fails the test unless it exits with code
// and its standard error holds every one of inStderr.
func wantCLI(t *testing.T, code int, args []string, inStderr ...string) cliResult {
	t.Helper()
	r := cli(t, args...)
	if r.code != code {
		t.Fatalf("caddy %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	for _, s := range inStderr {
		if !strings.Contains(r.stderr, s) {
			t.Fatalf("caddy %s: want %q in stderr, got %s", strings.Join(args, " "), s, r)
		}
	}
	return r
}

// tableRow returns the cells of the row of a table output whose first
// column is key, and checks that its columns start where the header's do.
func tableRow(t *testing.T, out, key string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := lines[0]
	starts := columnStarts(header)
	for _, line := range lines[1:] {
		if strings.Fields(line)[0] != key {
			continue
		}
		var cells []string
		for i, s := range starts {
			end := len(line)
			if i+1 < len(starts) {
				end = starts[i+1]
			}
			if s >= len(line) || line[s] == ' ' || s > 0 && line[s-1] != ' ' {
				t.Fatalf("row %q: column %d does not start under its header:\n%s", key, i, out)
			}
			cells = append(cells, strings.TrimSpace(line[s:min(end, len(line))]))
		}
		return cells
	}
	t.Fatalf("no row %q in:\n%s", key, out)
	return nil
}

// columnStarts returns where each column of a header line of one-word
// names starts.
func columnStarts(header string) []int {
	var starts []int
	for i := range header {
		if header[i] != ' ' && (i == 0 || header[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	return starts
}

func TestCLIClients(t *testing.T) {
	e := newEnv(t)
	be := startBackend(t)
	port := freePort(t)
	c := startCaddy(t, e, gatewaySite(e, port, "file_system "+filepath.Join(e.dir, "storage"), be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	at := []string{"--address", c.admin}
	clients := func(args ...string) []string { return append(append([]string{"mtls", "clients"}, args...), at...) }

	r := wantCLI(t, 0, clients("list", "--json"))
	var list []store.ClientInfo
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 0 {
		t.Fatalf("empty list --json: %v\n%s", err, r)
	}

	// Add, then the same certificate under another alias: 409.
	r = wantCLI(t, 0, clients("add", "alice", e.path("alice"), "--tier", "gold"))
	if cells := tableRow(t, r.stdout, "alice"); cells[1] != "gold" || cells[2] != "CN=alice" || !strings.HasPrefix(fingerprintHex(e.alice), cells[3]) {
		t.Fatalf("add's answer: %q\n%s", cells, r)
	}
	wantCLI(t, 1, clients("add", "alice-again", e.path("alice")), "409", `stored already, as client "alice"`)
	// 400 from the API: exit 1 with its reason.
	wantCLI(t, 1, clients("add", "expired", e.path("expired")), "400", "could never be accepted")
	wantCLI(t, 0, clients("add", "partner", e.path("partner")))

	// The table: aligned columns, short fingerprint, not_after.
	r = wantCLI(t, 0, clients("list"))
	if h := strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0]); strings.Join(h, " ") != "ALIAS TIER SUBJECT FINGERPRINT NOT_AFTER GROUPS CERTS" {
		t.Fatalf("table header: %q", h)
	}
	alice := tableRow(t, r.stdout, "alice")
	if alice[1] != "gold" || alice[2] != "CN=alice" || len(alice[3]) != 16 || !strings.HasPrefix(fingerprintHex(e.alice), alice[3]) ||
		alice[4] != e.alice.Cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z") {
		t.Fatalf("alice's row: %q\n%s", alice, r)
	}
	if partner := tableRow(t, r.stdout, "partner"); partner[1] != "-" || partner[2] != "CN=partner-app" {
		t.Fatalf("partner's row: %q\n%s", partner, r)
	}
	// --json: the API's JSON.
	r = wantCLI(t, 0, clients("list", "--json"))
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 2 || list[0].Alias != "alice" || list[0].Fingerprint != fingerprintHex(e.alice) || list[0].Issuer != "CN=Integration Root" {
		t.Fatalf("list --json: %v\n%s", err, r)
	}

	// A client added with the CLI is accepted by a clients_from_storage
	// gateway, with its tier.
	base := fmt.Sprintf("https://localhost:%d", port)
	eventually(t, "client added with the CLI accepted", func() error {
		res := doRawE(e.goClient(e.alice), base+"/")
		if res.err != nil || res.status != 200 {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		return nil
	})
	if res := do(t, e.goClient(e.alice), base+"/", nil); res.upstream.Get("X-Caller") != "alice" || res.upstream.Get("X-Tier") != "gold" {
		t.Fatalf("placeholders of the client added with the CLI: %q %q", res.upstream.Get("X-Caller"), res.upstream.Get("X-Tier"))
	}

	// Remove: an unknown alias is a 404; a removed client is refused.
	wantCLI(t, 1, clients("remove", "nobody"), "404", "not found")
	r = wantCLI(t, 0, clients("remove", "alice"))
	if !strings.Contains(r.stdout, "alice") {
		t.Fatalf("remove's output: %s", r)
	}
	eventually(t, "client removed with the CLI refused", func() error {
		if res := doRawE(e.goClient(e.alice), base+"/"); res.status != 403 {
			return fmt.Errorf("status %d %v", res.status, res.err)
		}
		return nil
	})
	r = wantCLI(t, 0, clients("list", "--json"))
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].Alias != "partner" {
		t.Fatalf("list --json after remove: %v\n%s", err, r)
	}

	// Usage errors: exit 2.
	for _, args := range [][]string{
		clients("add", "alice"),
		clients("add", "a..b", e.path("alice")),
		clients("add", "bob", filepath.Join(e.dir, "missing.pem")),
		clients("list", "--bogus"),
		clients("list", "extra"),
		clients("remove"),
		clients("frobnicate"),
		{"mtls", "clients", "list", "--address", "localhost:notaport"},
		{"mtls", "clients", "list", "--address", "localhost:2019-2020"},
		{"mtls", "clients", "list", "--adapter", "caddyfile"},
	} {
		wantCLI(t, 2, args, "Error: ")
	}

	// The admin endpoint down: exit 1, saying so.
	down := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	wantCLI(t, 1, []string{"mtls", "clients", "list", "--address", down}, "admin endpoint "+down+" not reachable: ")
	wantCLI(t, 1, []string{"mtls", "clients", "add", "bob", e.path("bob"), "--address", down}, "admin endpoint "+down+" not reachable: ")

	// The admin address read from a config file, as `caddy reload` does.
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	writeFile(t, cfg, "{\n\tadmin "+c.admin+"\n}\n")
	r = wantCLI(t, 0, []string{"mtls", "clients", "list", "--json", "--config", cfg, "--adapter", "caddyfile"})
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 {
		t.Fatalf("list with --config: %v\n%s", err, r)
	}
}

func TestCLIKeyPairs(t *testing.T) {
	e := newEnv(t)
	c := startCaddy(t, e, `{
	admin {admin}
	storage file_system `+filepath.Join(e.dir, "storage")+`
}
`, "caddyfile")
	keypairs := func(args ...string) []string {
		return append(append([]string{"mtls", "keypairs"}, args...), "--address", c.admin)
	}

	// Generate; again: 409; with --replace: a new one.
	r := wantCLI(t, 0, keypairs("generate", "gw", "--cn", "gateway.example", "--org", "Example", "--days", "30", "--key-type", "p384"))
	first := tableRow(t, r.stdout, "gw")
	if first[1] != "p384" || first[2] != "CN=gateway.example,O=Example" {
		t.Fatalf("generate's answer: %q\n%s", first, r)
	}
	wantCLI(t, 1, keypairs("generate", "gw", "--cn", "again"), "409", "exists")
	r = wantCLI(t, 0, keypairs("generate", "gw", "--cn", "gateway.example", "--replace", "--json"))
	var info store.KeyPairInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || info.Name != "gw" || info.KeyType != "p256" || strings.HasPrefix(info.Fingerprint, first[3]) {
		t.Fatalf("generate --replace --json: %v\n%s", err, r)
	}
	wantCLI(t, 1, keypairs("generate", "gw2", "--cn", "x", "--key-type", "dsa"), "400", "unknown key_type")

	// Upload; again: 409; a key that is not the certificate's: 400.
	r = wantCLI(t, 0, keypairs("upload", "up", e.path("alice"), e.path("alice-key")))
	if row := tableRow(t, r.stdout, "up"); !strings.HasPrefix(fingerprintHex(e.alice), row[3]) || row[2] != "CN=alice" {
		t.Fatalf("upload's answer: %q\n%s", row, r)
	}
	wantCLI(t, 1, keypairs("upload", "up", e.path("bob"), e.path("bob-key")), "409")
	wantCLI(t, 0, keypairs("upload", "up", e.path("bob"), e.path("bob-key"), "--replace"))
	wantCLI(t, 1, keypairs("upload", "up2", e.path("alice"), e.path("bob-key")), "400", "does not match")

	// List: table and --json.
	r = wantCLI(t, 0, keypairs("list"))
	if h := strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0]); strings.Join(h, " ") != "NAME KEY_TYPE SUBJECT FINGERPRINT NOT_AFTER" {
		t.Fatalf("table header: %q", h)
	}
	if row := tableRow(t, r.stdout, "up"); row[2] != "CN=bob" || !strings.HasPrefix(fingerprintHex(e.bob), row[3]) {
		t.Fatalf("up's row: %q\n%s", row, r)
	}
	tableRow(t, r.stdout, "gw")
	r = wantCLI(t, 0, keypairs("list", "--json"))
	var infos []store.KeyPairInfo
	if err := json.Unmarshal([]byte(r.stdout), &infos); err != nil || len(infos) != 2 || strings.Contains(r.stdout, "PRIVATE") {
		t.Fatalf("list --json: %v\n%s", err, r)
	}

	// Download: to stdout, and to a file.
	r = wantCLI(t, 0, keypairs("download", "gw"))
	if cert, err := parseCertPEM([]byte(r.stdout)); err != nil || cert.Subject.CommonName != "gateway.example" || strings.Contains(r.stdout, "PRIVATE") {
		t.Fatalf("download: %v\n%s", err, r)
	}
	out := filepath.Join(t.TempDir(), "gw.pem")
	r = wantCLI(t, 0, keypairs("download", "up", "--out", out))
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err := parseCertPEM(data); err != nil || cert.Subject.CommonName != "bob" || !strings.Contains(r.stderr+r.stdout, out) {
		t.Fatalf("download --out: %v\n%s", err, r)
	}
	wantCLI(t, 1, keypairs("download", "nothing"), "404", "not found")

	// Delete; again: 404.
	wantCLI(t, 0, keypairs("delete", "gw"))
	wantCLI(t, 1, keypairs("delete", "gw"), "404", "not found")
	wantCLI(t, 1, keypairs("download", "gw"), "404")

	// Usage errors: exit 2.
	for _, args := range [][]string{
		keypairs("generate", "gw"), // no --cn
		keypairs("generate", "--cn", "x"),
		keypairs("generate", "../x", "--cn", "x"),
		keypairs("generate", "gw", "--cn", "x", "--days", "many"),
		keypairs("upload", "up", e.path("alice")),
		keypairs("upload", "up", e.path("alice"), filepath.Join(e.dir, "missing.pem")),
		keypairs("download"),
		keypairs("delete", "a", "b"),
		keypairs("rename", "a", "b"),
	} {
		wantCLI(t, 2, args, "Error: ")
	}

	// The admin endpoint down.
	down := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	wantCLI(t, 1, []string{"mtls", "keypairs", "list", "--address", down}, "admin endpoint "+down+" not reachable: ")
}

// TestCLIUnixSocket: an admin endpoint on a unix socket, as README's
// "Securing the admin endpoint" advises, is reached with --address.
func TestCLIUnixSocket(t *testing.T) {
	e := newEnv(t)
	// A short path: unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "mtlscli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	cfg := filepath.Join(dir, "Caddyfile")
	writeFile(t, cfg, "{\n\tadmin unix/"+sock+"|0600\n\tstorage file_system "+filepath.Join(e.dir, "storage")+"\n}\n")
	var logs syncBuffer
	cmd := exec.Command(caddyBin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	runProcess(t, "caddy", cmd, logs.String)
	eventually(t, "admin socket", func() error {
		_, err := os.Stat(sock)
		return err
	})

	addr := "unix/" + sock
	wantCLI(t, 0, []string{"mtls", "clients", "add", "alice", e.path("alice"), "--address", addr})
	r := wantCLI(t, 0, []string{"mtls", "clients", "list", "--address", addr})
	tableRow(t, r.stdout, "alice")
	// The address read from the config, socket permissions and all.
	r = wantCLI(t, 0, []string{"mtls", "clients", "list", "--config", cfg, "--adapter", "caddyfile"})
	tableRow(t, r.stdout, "alice")
	wantCLI(t, 0, []string{"mtls", "clients", "remove", "alice", "--address", addr})
}

// TestCLIInspectKeygen: the usage errors of inspect and keygen, and keygen
// refusing to overwrite files without --force.
func TestCLIInspectKeygen(t *testing.T) {
	e := newEnv(t)
	wantCLI(t, 2, []string{"mtls", "inspect"}, "give a PEM file or --header")
	wantCLI(t, 2, []string{"mtls", "inspect", "--header", "x", e.path("alice")}, "not both")
	wantCLI(t, 2, []string{"mtls", "inspect", "--chain", "x", e.path("alice")}, "--chain goes with --header")
	wantCLI(t, 2, []string{"mtls", "inspect", e.path("alice"), e.path("bob")}, "Error: ")
	wantCLI(t, 1, []string{"mtls", "inspect", "--ca", e.path("root"), e.path("bob")}, "does not verify")

	dir := t.TempDir()
	keygen := []string{"mtls", "keygen", "--out", dir, "--name", "gw", "--cn", "gateway.example"}
	r := wantCLI(t, 0, keygen)
	certPath, keyPath := filepath.Join(dir, "gw.pem"), filepath.Join(dir, "gw-key.pem")
	if !strings.Contains(r.stdout, "wrote "+certPath+" and "+keyPath) {
		t.Fatalf("keygen's output: %s", r)
	}
	before, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	wantCLI(t, 1, keygen, certPath+" exists", "--force")
	if after, _ := os.ReadFile(keyPath); !bytes.Equal(before, after) {
		t.Fatal("keygen without --force overwrote the key")
	}
	r = wantCLI(t, 0, append(keygen, "--force"))
	if after, _ := os.ReadFile(keyPath); bytes.Equal(before, after) || !strings.Contains(r.stdout, "wrote ") {
		t.Fatalf("keygen --force did not write a new key: %s", r)
	}
	wantCLI(t, 2, []string{"mtls", "keygen", "--name", "gw"}, "--out is required")
	wantCLI(t, 2, []string{"mtls", "keygen", "--out", dir, "--name", "../x"}, "invalid name")

	demo := t.TempDir()
	r = wantCLI(t, 0, []string{"mtls", "keygen", "--demo", "--out", demo})
	if !strings.Contains(r.stdout, "clients-ca.pem") || !strings.Contains(r.stdout, "alice-key.pem") {
		t.Fatalf("keygen --demo's output: %s", r)
	}
	wantCLI(t, 1, []string{"mtls", "keygen", "--demo", "--out", demo}, "--force")
	wantCLI(t, 0, []string{"mtls", "keygen", "--demo", "--out", demo, "--force"})
}
