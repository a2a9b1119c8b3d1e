package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// quickstartSection returns the README's text from heading to the next
// heading.
func quickstartSection(t *testing.T, readme, heading string) string {
	t.Helper()
	i := strings.Index(readme, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no heading %q", heading)
	}
	rest := readme[i+len(heading)+2:]
	if j := regexp.MustCompile(`(?m)^#{2,3} `).FindStringIndex(rest); j != nil {
		rest = rest[:j[0]]
	}
	return rest
}

// fencedBlocks returns the fenced blocks of section whose info string is info.
func fencedBlocks(section, info string) []string {
	var out []string
	for _, m := range regexp.MustCompile("(?s)```"+regexp.QuoteMeta(info)+"\n(.*?)```").FindAllStringSubmatch(section, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestQuickstart follows the README's quick start as written: its openssl
// commands in an empty folder, its Caddyfile (on free ports, with the test's
// admin address), `caddy run` there, and its curl calls, whose output must be
// what their comments say: 200, 401 without a certificate, 403 untrusted,
// each refusal logged with its reason.
func TestQuickstart(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	pki := fencedBlocks(quickstartSection(t, readme, "### 1. Certificates"), "sh")
	caddyfile := fencedBlocks(quickstartSection(t, readme, "### 2. Caddyfile"), "caddyfile quickstart")
	var calls []string
	for _, b := range fencedBlocks(quickstartSection(t, readme, "### 3. Run it and call it"), "sh") {
		for _, line := range strings.Split(b, "\n") {
			if strings.HasPrefix(line, "curl ") {
				calls = append(calls, line)
			}
		}
	}
	if len(pki) != 1 || len(caddyfile) != 1 || len(calls) != 3 {
		t.Fatalf("README quick start: %d certificate blocks, %d Caddyfiles, %d curl calls; want 1, 1, 3", len(pki), len(caddyfile), len(calls))
	}

	dir := t.TempDir()
	cmd := exec.Command("bash", "-euc", pki[0])
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("quick start openssl commands: %v\n%s", err, out)
	}

	gateway, backend := strconv.Itoa(freePort(t)), strconv.Itoa(freePort(t))
	ports := strings.NewReplacer(":8443", ":"+gateway, ":9443", ":"+backend)
	c := &caddyProc{admin: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	config := ports.Replace(caddyfile[0])
	if !strings.HasPrefix(config, "{\n") {
		t.Fatal("README quick start Caddyfile does not start with its global options")
	}
	config = "{\n\tadmin " + c.admin + "\n" + config[2:]
	writeFile(t, filepath.Join(dir, "Caddyfile"), config)

	home := t.TempDir()
	run := exec.Command(caddyBin, "run")
	run.Dir = dir
	run.Env = append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	run.Stdout, run.Stderr = lockedWriter{c}, lockedWriter{c}
	c.exited = runProcess(t, "caddy", run, c.Logs)
	for _, addr := range []string{c.admin, "127.0.0.1:" + gateway, "127.0.0.1:" + backend} {
		waitListening(t, addr, c.exited, c.Logs)
	}

	var codes []string
	for _, line := range calls {
		command, comment, ok := strings.Cut(line, "#")
		if !ok {
			t.Fatalf("README quick start call has no comment saying what it answers: %s", line)
		}
		want, _, _ := strings.Cut(strings.TrimSpace(comment), ":")
		cmd := exec.Command("bash", "-euc", ports.Replace(command))
		cmd.Dir = dir
		out, err := cmd.Output()
		got := strings.TrimSpace(string(out))
		if err != nil || got != want {
			t.Errorf("%s\n\tgave %q (%v), the README says %q", line, got, err, want)
		}
		codes = append(codes, regexp.MustCompile(`\d{3}$`).FindString(want))
	}
	if strings.Join(codes, " ") != "200 401 403" {
		t.Errorf("README quick start calls answer %v, want 200, 401, 403", codes)
	}

	eventually(t, "refusals logged with their reasons", func() error {
		var reasons []string
		for _, l := range logLines(c, "client certificate refused") {
			reasons = append(reasons, fmt.Sprint(l["reason"]))
		}
		if strings.Join(reasons, " ") != "no_cert untrusted" {
			return fmt.Errorf("reasons logged: %v, want no_cert untrusted", reasons)
		}
		return nil
	})
	for _, reason := range []string{`"reason":"no_cert"`, `"reason":"untrusted"`, `"subject":"CN=mallory"`} {
		if !strings.Contains(quickstartSection(t, readme, "### 3. Run it and call it"), reason) {
			t.Errorf("README quick start log lines do not show %s", reason)
		}
	}
}
