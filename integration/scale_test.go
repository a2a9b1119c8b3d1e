package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// redisServer is a redis-server of a test, on loopback.
type redisServer struct {
	addr   string
	dir    string
	port   int
	exited <-chan struct{}
	stop   func()
}

// startRedis starts redis-server on port (0: a free one) with its data in
// dir, kept on disk (append-only file, written out at shutdown) so that a
// restart finds it.
func startRedis(t *testing.T, dir string, port int) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed (apt-get install -y redis-server; .ci/run does): %v", err)
	}
	if port == 0 {
		port = freePort(t)
	}
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", dir)
	var redisLog syncBuffer
	cmd.Stdout, cmd.Stderr = &redisLog, &redisLog
	exited := runProcess(t, "redis", cmd, redisLog.String)
	r := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, port: port, exited: exited}
	r.stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}
	waitListening(t, r.addr, exited, redisLog.String)
	return r
}

// commandCalls returns how many times redis ran each command so far
// (INFO commandstats), by lower-case name.
func (r *redisServer) commandCalls(t *testing.T) map[string]int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	head, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") {
		t.Fatalf("INFO: %q %v", head, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	for _, m := range cmdstatRE.FindAllStringSubmatch(string(body), -1) {
		calls[m[1]], _ = strconv.Atoi(m[2])
	}
	return calls
}

var cmdstatRE = regexp.MustCompile(`cmdstat_([a-z|]+):calls=(\d+)`)

// reads sums the calls of the commands that read a key.
func reads(calls map[string]int) int {
	return calls["get"] + calls["mget"] + calls["zrange"] + calls["exists"]
}

// TestClusterScale: three gateways share a Redis storage holding 10,000
// stored clients. A gateway starting cold serves once it has them all; a
// refresh when nothing changed reads O(1) keys, not O(clients); a change
// made through any instance is in force on every instance, reading only
// what changed; the listing pages through the admin API and the CLI, each
// client once; with Redis stopped, the last good set keeps judging
// requests, and once Redis is back changes flow again, nothing lost or
// duplicated.
func TestClusterScale(t *testing.T) {
	const clients = 10000
	e := newEnv(t)
	be := startBackend(t)
	redis := startRedis(t, t.TempDir(), 0)
	storage := fmt.Sprintf("redis {\n\t\taddress %s\n\t\tkey_prefix caddy-mtls-scale\n\t}", redis.addr)

	// 10,000 clients, imported through instance A in batches; a few of
	// them with the keys the test calls with.
	start := time.Now()
	ca := demopki.Must(demopki.NewCA("Scale CA"))
	callers := map[int]*demopki.Cert{}
	portA, portB, portC := freePort(t), freePort(t), freePort(t)
	a := startCaddy(t, e, gatewaySite(e, portA, storage, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portA))
	b := startCaddy(t, e, gatewaySite(e, portB, storage, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portB))
	var batch []map[string]any
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if status, body := adminCall(t, a, http.MethodPost, "/mtls/clients", map[string]any{"clients": batch}); status != 200 {
			t.Fatalf("import: %d %s", status, body)
		}
		batch = batch[:0]
	}
	for i := range clients {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprintf("client-%05d", i)}))
		if i%2500 == 0 || i == clients-1 {
			callers[i] = c
		}
		batch = append(batch, map[string]any{"alias": fmt.Sprintf("client-%05d", i), "certificate": string(c.CertPEM()), "tier": "t" + strconv.Itoa(i%3)})
		if len(batch) == 250 {
			flush()
		}
	}
	flush()
	t.Logf("%d clients made and imported in %s", clients, time.Since(start).Round(time.Millisecond))

	// C starts cold with the 10,000 stored: it serves once it has read
	// them all.
	c := startCaddy(t, e, gatewaySite(e, portC, storage, be.addr), "caddyfile", fmt.Sprintf("127.0.0.1:%d", portC))
	t.Logf("C started cold at %s", time.Since(start).Round(time.Millisecond))
	urls := map[string]string{}
	for name, port := range map[string]int{"A": portA, "B": portB, "C": portC} {
		urls[name] = fmt.Sprintf("https://localhost:%d/", port)
	}
	for i, cert := range callers {
		if res := do(t, e.goClient(cert), urls["C"], nil); res.status != 200 || res.upstream.Get("X-Caller") != fmt.Sprintf("client-%05d", i) {
			t.Fatalf("C, cold, client %d: %d %q", i, res.status, res.upstream.Get("X-Caller"))
		}
	}
	accepted := func(cert *demopki.Cert, want int) func() error {
		return func() error {
			for name, u := range urls {
				if res := doRawE(e.goClient(cert), u); res.err != nil || res.status != want {
					return fmt.Errorf("%s: %d %v, want %d", name, res.status, res.err, want)
				}
			}
			return nil
		}
	}
	for _, cert := range callers {
		eventually(t, "every stored client accepted everywhere", accepted(cert, 200))
	}

	// Idle: three gateways refreshing every 200ms read a handful of keys
	// over a few seconds, not 10,000 per refresh.
	before := reads(redis.commandCalls(t))
	time.Sleep(2 * time.Second)
	if idle := reads(redis.commandCalls(t)) - before; idle > 100 {
		t.Fatalf("idle: %d key reads in 2s by 3 gateways refreshing every 200ms (10,000 stored clients)", idle)
	} else {
		t.Logf("idle: %d key reads in 2s by 3 gateways refreshing every 200ms", idle)
	}

	// A change through B is in force everywhere, and reading it costs what
	// changed.
	newcomer := demopki.Must(ca.Issue(demopki.Options{CommonName: "newcomer"}))
	before = reads(redis.commandCalls(t))
	if status, body := adminCall(t, b, http.MethodPut, "/mtls/clients/newcomer", map[string]any{"certificate": string(newcomer.CertPEM()), "groups": []string{"late"}}); status != 200 {
		t.Fatalf("PUT on B: %d %s", status, body)
	}
	eventually(t, "the newcomer accepted everywhere", accepted(newcomer, 200))
	if changed := reads(redis.commandCalls(t)) - before; changed > 200 {
		t.Fatalf("one change: %d key reads", changed)
	}
	if status, body := adminCall(t, c, http.MethodDelete, "/mtls/clients/client-02500", nil); status != 204 {
		t.Fatalf("DELETE on C: %d %s", status, body)
	}
	eventually(t, "the deleted client refused everywhere", accepted(callers[2500], 403))

	t.Logf("changes in force at %s", time.Since(start).Round(time.Millisecond))
	// Listing: the CLI pages through every client, each once, in order.
	listAll := func() []string {
		t.Helper()
		r := wantCLI(t, 0, []string{"mtls", "clients", "list", "--json", "--address", a.admin})
		var infos []struct{ Alias string }
		if err := json.Unmarshal([]byte(r.stdout), &infos); err != nil {
			t.Fatalf("clients list --json: %v", err)
		}
		aliases := make([]string, len(infos))
		for i, info := range infos {
			aliases[i] = info.Alias
		}
		return aliases
	}
	aliases := listAll()
	if len(aliases) != clients || !slices.IsSorted(aliases) || len(slices.Compact(slices.Clone(aliases))) != clients {
		t.Fatalf("listing: %d aliases (want %d, sorted, each once)", len(aliases), clients)
	}
	table := wantCLI(t, 0, []string{"mtls", "clients", "list", "--group", "late", "--address", a.admin})
	if lines := strings.Split(strings.TrimSpace(table.stdout), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "newcomer ") {
		t.Fatalf("clients list --group late:\n%s", table.stdout)
	}

	t.Logf("listed at %s", time.Since(start).Round(time.Millisecond))
	// Redis stopped: requests are judged by the last good set, changes are
	// refused; back, changes flow again.
	redis.stop()
	for _, i := range []int{0, clients - 1} {
		if err := accepted(callers[i], 200)(); err != nil {
			t.Fatalf("Redis down, client %d: %v", i, err)
		}
	}
	if err := accepted(callers[2500], 403)(); err != nil {
		t.Fatalf("Redis down, deleted client: %v", err)
	}
	late := demopki.Must(ca.Issue(demopki.Options{CommonName: "late"}))
	if status, _ := adminCall(t, a, http.MethodPut, "/mtls/clients/late", map[string]any{"certificate": string(late.CertPEM())}); status < 500 {
		t.Fatalf("PUT with Redis down: %d", status)
	}
	time.Sleep(time.Second) // refreshes fail meanwhile
	if err := accepted(callers[0], 200)(); err != nil {
		t.Fatalf("Redis down a while: %v", err)
	}
	redis = startRedis(t, redis.dir, redis.port)
	eventually(t, "a change after Redis came back", func() error {
		if status, body := adminCall(t, a, http.MethodPut, "/mtls/clients/late", map[string]any{"certificate": string(late.CertPEM())}); status != 200 {
			return fmt.Errorf("PUT: %d %s", status, body)
		}
		return nil
	})
	eventually(t, "the client added after the outage accepted everywhere", accepted(late, 200))
	eventually(t, "the client deleted before the outage still refused", accepted(callers[2500], 403))
	if aliases := listAll(); len(aliases) != clients+1 || len(slices.Compact(slices.Clone(aliases))) != clients+1 {
		t.Fatalf("after the outage: %d aliases, want %d, each once", len(aliases), clients+1)
	}
}
