package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// proc is a started redis-server or Caddy.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string        // the file its stdout and stderr go to
	exited chan struct{} // closed once it has exited
	admin  string        // Caddy's admin address, host:port
	port   int           // Caddy's HTTPS port, redis' port
}

// running holds every process started and not yet stopped, so that they
// are all stopped when the program ends, however it ends.
var running struct {
	sync.Mutex
	procs map[*proc]bool
}

// start starts cmd with its stdout and stderr in logPath. The process gets
// SIGTERM if this program dies without stopping it.
func start(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	err = cmd.Start()
	logf.Close() // the child has its own
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	running.Lock()
	if running.procs == nil {
		running.procs = map[*proc]bool{}
	}
	running.procs[p] = true
	running.Unlock()
	return p, nil
}

// stop ends the process: SIGTERM, then SIGKILL after 20 s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	running.Lock()
	delete(running.procs, p)
	running.Unlock()
}

// stopAll stops every process still running.
func stopAll() {
	running.Lock()
	var procs []*proc
	for p := range running.procs {
		procs = append(procs, p)
	}
	running.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) { return testpeer.FreePort() }

// startRedis starts redis-server on port with its data in dir, kept on
// disk (append-only file, written out at shutdown) so that a restart on
// the same dir and port finds it; as the integration tests run it.
func startRedis(dir, logDir string, port int) (*proc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not installed (apt-get install -y redis-server): %w", err)
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "everysec", "--dir", dir)
	p, err := start("redis", cmd, filepath.Join(logDir, fmt.Sprintf("redis-%d.log", time.Now().UnixNano())))
	if err != nil {
		return nil, err
	}
	p.port = port
	if err := testpeer.WaitListening(p.addr(), 2*time.Minute, p.exited); err != nil {
		p.stop()
		return nil, fmt.Errorf("redis: %w (see %s)", err, p.log)
	}
	// Loading a large append-only file takes a while; redis answers
	// LOADING to most commands meanwhile.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		busy, err := loading(p.addr())
		if err == nil && !busy {
			return p, nil
		}
		if err == nil {
			err = errors.New("still loading its data")
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("redis not answering: %w (see %s)", err, p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *proc) addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

// commandCalls returns how many times redis ran each command so far
// (INFO commandstats), by lower-case name.
func commandCalls(addr string) (map[string]int, error) {
	body, err := info(addr, "commandstats")
	if err != nil {
		return nil, err
	}
	calls := map[string]int{}
	for _, m := range cmdstatRE.FindAllStringSubmatch(body, -1) {
		calls[m[1]], _ = strconv.Atoi(m[2])
	}
	return calls, nil
}

// loading tells whether redis is still loading its data set (INFO
// persistence), when it answers most commands with LOADING.
func loading(addr string) (bool, error) {
	body, err := info(addr, "persistence")
	if err != nil {
		return false, err
	}
	m := loadingRE.FindStringSubmatch(body)
	if m == nil {
		return false, errors.New("INFO persistence: no loading field")
	}
	return m[1] != "0", nil
}

var loadingRE = regexp.MustCompile(`(?m)^loading:(\d+)`)

// info runs INFO section on redis at addr.
func info(addr, section string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n", len(section), section); err != nil {
		return "", err
	}
	br := bufio.NewReader(conn)
	head, err := br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("INFO: %w", err)
	}
	if !strings.HasPrefix(head, "$") {
		return "", fmt.Errorf("INFO: %q", strings.TrimSpace(head))
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		return "", fmt.Errorf("INFO: %w", err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return "", fmt.Errorf("INFO: %w", err)
	}
	return string(body), nil
}

var cmdstatRE = regexp.MustCompile(`cmdstat_([a-z|]+):calls=(\d+)`)

// keyReads sums the calls of the commands that read a key.
func keyReads(calls map[string]int) int {
	return calls["get"] + calls["mget"] + calls["zrange"] + calls["exists"]
}

// startCaddy starts Caddy with caddyfile, in which {admin} is replaced by
// an admin address on a free loopback port, and waits until its admin
// endpoint answers (waitHTTPS: and its HTTPS port listens, which it does
// once provisioned).
func startCaddy(dir, name, caddyfile string, port int, waitHTTPS bool) (*proc, error) {
	pdir := filepath.Join(dir, name)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
	cfg := filepath.Join(pdir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(caddyfile, "{admin}", admin)), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(*caddyBin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+pdir, "XDG_DATA_HOME="+pdir, "XDG_CONFIG_HOME="+pdir)
	p, err := start(name, cmd, filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	p.admin, p.port = admin, port
	wait := []string{admin}
	if waitHTTPS {
		wait = append(wait, fmt.Sprintf("127.0.0.1:%d", port))
	}
	for _, addr := range wait {
		if err := testpeer.WaitListening(addr, 3*time.Minute, p.exited); err != nil {
			p.stop()
			return nil, fmt.Errorf("%s: %w (see %s)", name, err, p.log)
		}
	}
	return p, nil
}

// statusKB reads a kB field of /proc/<pid>/status (VmRSS: current RSS).
func statusKB(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// heapInuse reads the Go heap in use of a Caddy from its admin
// /debug/vars.
func heapInuse(admin string) (uint64, error) {
	resp, err := adminClient.Get("http://" + admin + "/debug/vars")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var vars struct {
		Memstats struct{ HeapInuse uint64 } `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return 0, fmt.Errorf("decoding /debug/vars: %w", err)
	}
	return vars.Memstats.HeapInuse, nil
}

// collectGarbage makes a Caddy run its garbage collector (a heap profile
// with gc=1 does), so that two processes' memory is compared in the same
// state.
func collectGarbage(admin string) error {
	resp, err := adminClient.Get("http://" + admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heap profile: status %d", resp.StatusCode)
	}
	return nil
}

// backend is the gateways' upstream: plain HTTP on loopback, in this
// process.
type backend struct {
	addr string
	srv  *http.Server
}

func startBackend() (*backend, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, r.Header.Get("X-Caller"))
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	return &backend{addr: l.Addr().String(), srv: srv}, nil
}

func (b *backend) Close() { _ = b.srv.Close() }
