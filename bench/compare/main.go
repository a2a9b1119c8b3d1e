// Command compare measures the same mTLS gateway job three ways, on
// loopback, alternating them (A B C A B C ...), and prints medians and
// ratios as Markdown:
//
//	A  this plugin: client_cert_auth + reverse_proxy with ssl_profiles
//	B  vanilla Caddy (same binary): client_auth require_and_verify + http transport tls_client_auth
//	C  nginx: ssl_verify_client on + proxy_ssl_certificate, upstream keep-alive
//
// The backend is nginx requiring the gateway's client certificate. The load
// generator is this program: Go's TLS client, presenting client
// certificates. Workloads: keepalive (connections reused), handshake (a new
// TLS connection per request, no session resumption), many_callers (a new
// connection per request, each with one of -callers distinct certificates).
//
// Usage: go run ./bench/compare -caddy ./caddy [-duration 8s] [-rounds 3]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
	"github.com/caddy-mtls/caddy-mtls/internal/testpki"
)

var (
	caddyBin    = flag.String("caddy", "./caddy", "Caddy built with this plugin")
	nginxBin    = flag.String("nginx", "nginx", "nginx binary")
	duration    = flag.Duration("duration", 8*time.Second, "measured time of one run")
	rounds      = flag.Int("rounds", 3, "rounds (each runs every system once per workload)")
	concurrency = flag.Int("concurrency", 16, "concurrent client connections")
	callers     = flag.Int("callers", 10000, "distinct client certificates of the many_callers workload")
	only        = flag.String("workloads", "keepalive,handshake,many_callers", "the workloads to run, comma-separated")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

type pki struct {
	dir                      string
	clientCA, serverCA, beCA *testpki.Cert
	callers                  []tls.Certificate
	files                    map[string]string
}

func makePKI(dir string, n int) (*pki, error) {
	p := &pki{dir: dir, files: map[string]string{}}
	var err error
	if p.clientCA, err = testpki.NewCA("Bench Clients"); err != nil {
		return nil, err
	}
	if p.serverCA, err = testpki.NewCA("Bench Server CA"); err != nil {
		return nil, err
	}
	if p.beCA, err = testpki.NewCA("Bench Backend CA"); err != nil {
		return nil, err
	}
	server, err := p.serverCA.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})
	if err != nil {
		return nil, err
	}
	gw, err := p.beCA.Issue(testpki.Options{CommonName: "gateway"})
	if err != nil {
		return nil, err
	}
	for name, c := range map[string]*testpki.Cert{"client-ca": p.clientCA, "server-ca": p.serverCA, "backend-ca": p.beCA, "server": server, "gateway": gw} {
		cert, key, err := c.WriteFiles(dir, name)
		if err != nil {
			return nil, err
		}
		p.files[name], p.files[name+"-key"] = cert, key
	}
	for i := 0; i < n; i++ {
		c, err := p.clientCA.Issue(testpki.Options{CommonName: fmt.Sprintf("caller-%d", i)})
		if err != nil {
			return nil, err
		}
		p.callers = append(p.callers, c.TLSCertificate())
	}
	return p, nil
}

// proc is a started gateway or backend.
type proc struct {
	cmd  *exec.Cmd
	pids func() []int
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(port int) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("port %d not listening", port)
}

func startNginx(dir, name, httpBody string, port int) (*proc, error) {
	pdir := filepath.Join(dir, name)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	conf := testpeer.NginxConfig(pdir, 2, httpBody)
	confPath := filepath.Join(pdir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(*nginxBin, "-p", pdir, "-c", confPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, pids: func() []int { return append([]int{cmd.Process.Pid}, children(cmd.Process.Pid)...) }}
	if err := waitPort(port); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

func startCaddy(dir, name, caddyfile string, port int) (*proc, error) {
	pdir := filepath.Join(dir, name)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(pdir, "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(*caddyBin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+pdir, "XDG_DATA_HOME="+pdir, "XDG_CONFIG_HOME="+pdir)
	logf, err := os.Create(filepath.Join(pdir, "caddy.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, pids: func() []int { return []int{cmd.Process.Pid} }}
	if err := waitPort(port); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w (see %s)", name, err, logf.Name())
	}
	return p, nil
}

// children lists the child processes of pid (nginx's workers).
func children(pid int) []int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// cpuTicks sums user and system clock ticks of pids.
func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		total += utime + stime
	}
	return total
}

// peakRSS sums VmHWM (kB) of pids.
func peakRSS(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				total += kb
			}
		}
	}
	return total
}

type result struct {
	rps, p50, p99, cpu float64 // cpu in cores
	rssMB              float64
	errors             int64
}

// load runs one workload against url for d.
func load(url string, p *pki, workload string, d time.Duration) result {
	roots := x509.NewCertPool()
	roots.AddCert(p.serverCA.Cert)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		lat     []time.Duration
		errs    atomic.Int64
		counter atomic.Int64
	)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []time.Duration
			cfg := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{p.callers[w%len(p.callers)]}}
			tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 1, DisableKeepAlives: workload != "keepalive"}
			if workload == "many_callers" {
				cfg.Certificates = nil
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return &p.callers[int(counter.Add(1))%len(p.callers)], nil
				}
			}
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil {
				start := time.Now()
				resp, err := client.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r := result{rps: float64(len(lat)) / d.Seconds(), errors: errs.Load()}
	if len(lat) > 0 {
		r.p50 = float64(lat[len(lat)/2].Microseconds()) / 1000
		r.p99 = float64(lat[len(lat)*99/100].Microseconds()) / 1000
	}
	return r
}

func run() error {
	dir, err := os.MkdirTemp("", "caddy-mtls-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "making %d caller certificates...\n", *callers)
	p, err := makePKI(dir, *callers)
	if err != nil {
		return err
	}
	bePort := freePort()
	backend, err := startNginx(dir, "backend", fmt.Sprintf(`
	server {
		listen 127.0.0.1:%d ssl;
		ssl_certificate %s;
		ssl_certificate_key %s;
		ssl_client_certificate %s;
		ssl_verify_client on;
		keepalive_requests 100000;
		location / { return 200 "ok"; }
	}`, bePort, p.files["server"], p.files["server-key"], p.files["backend-ca"]), bePort)
	if err != nil {
		return err
	}
	defer backend.stop()

	systems := []struct {
		name  string
		start func(port int) (*proc, error)
	}{
		{"plugin", func(port int) (*proc, error) {
			return startCaddy(dir, "plugin", fmt.Sprintf(`{
	admin off
	auto_https off
}
https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode request
		}
	}
	client_cert_auth {
		trust_pool file %[4]s
	}
	reverse_proxy https://localhost:%[5]d {
		transport ssl_profiles {
			profile localhost:%[5]d {
				tls_trust_pool file %[6]s
				tls_client_auth %[7]s %[8]s
			}
		}
	}
}`, port, p.files["server"], p.files["server-key"], p.files["client-ca"], bePort, p.files["server-ca"], p.files["gateway"], p.files["gateway-key"]), port)
		}},
		{"vanilla_caddy", func(port int) (*proc, error) {
			return startCaddy(dir, "vanilla", fmt.Sprintf(`{
	admin off
	auto_https off
}
https://localhost:%[1]d {
	tls %[2]s %[3]s {
		client_auth {
			mode require_and_verify
			trust_pool file %[4]s
		}
	}
	reverse_proxy https://localhost:%[5]d {
		transport http {
			tls_trust_pool file %[6]s
			tls_client_auth %[7]s %[8]s
		}
	}
}`, port, p.files["server"], p.files["server-key"], p.files["client-ca"], bePort, p.files["server-ca"], p.files["gateway"], p.files["gateway-key"]), port)
		}},
		{"nginx", func(port int) (*proc, error) {
			return startNginx(dir, "gateway", fmt.Sprintf(`
	upstream backend {
		server 127.0.0.1:%[5]d;
		keepalive 32;
	}
	server {
		listen 127.0.0.1:%[1]d ssl;
		ssl_certificate %[2]s;
		ssl_certificate_key %[3]s;
		ssl_client_certificate %[4]s;
		ssl_verify_client on;
		ssl_session_cache off;
		ssl_session_tickets off;
		keepalive_requests 100000;
		location / {
			proxy_pass https://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_ssl_server_name on;
			proxy_ssl_name localhost;
			proxy_ssl_verify on;
			proxy_ssl_trusted_certificate %[6]s;
			proxy_ssl_certificate %[7]s;
			proxy_ssl_certificate_key %[8]s;
			proxy_ssl_session_reuse on;
		}
	}`, port, p.files["server"], p.files["server-key"], p.files["client-ca"], bePort, p.files["server-ca"], p.files["gateway"], p.files["gateway-key"]), port)
		}},
	}
	workloads := strings.Split(*only, ",")
	results := map[string]map[string][]result{}
	for _, wl := range workloads {
		results[wl] = map[string][]result{}
	}
	for r := 1; r <= *rounds; r++ {
		for _, wl := range workloads {
			for _, sys := range systems {
				port := freePort()
				pr, err := sys.start(port)
				if err != nil {
					return err
				}
				url := fmt.Sprintf("https://localhost:%d/", port)
				load(url, p, wl, time.Second) // warm-up
				pids := pr.pids()
				before := cpuTicks(pids)
				res := load(url, p, wl, *duration)
				res.cpu = float64(cpuTicks(pids)-before) / 100 / duration.Seconds() // USER_HZ is 100 on Linux
				res.rssMB = float64(peakRSS(pids)) / 1024
				pr.stop()
				results[wl][sys.name] = append(results[wl][sys.name], res)
				fmt.Fprintf(os.Stderr, "round %d %-12s %-13s %8.0f req/s p50 %6.2f ms p99 %6.2f ms cpu %.2f rss %.0f MB errors %d\n",
					r, wl, sys.name, res.rps, res.p50, res.p99, res.cpu, res.rssMB, res.errors)
			}
		}
	}

	fmt.Printf("Machine: %d cores, %s/%s, Go %s; %d rounds of %s per system and workload, %d connections.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), *rounds, *duration, *concurrency)
	fmt.Println("| workload | system | req/s | p50 ms | p99 ms | CPU cores | peak RSS MB | errors | req/s vs vanilla Caddy | req/s vs nginx |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, wl := range workloads {
		med := map[string]result{}
		for _, sys := range systems {
			med[sys.name] = median(results[wl][sys.name])
		}
		for _, sys := range systems {
			m := med[sys.name]
			fmt.Printf("| %s | %s | %.0f | %.2f | %.2f | %.2f | %.0f | %d | %.3f | %.3f |\n", wl, sys.name, m.rps, m.p50, m.p99, m.cpu, m.rssMB, m.errors,
				m.rps/med["vanilla_caddy"].rps, m.rps/med["nginx"].rps)
		}
	}
	return nil
}

// median returns the per-field medians of rs.
func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	var errs int64
	for _, r := range rs {
		errs += r.errors
	}
	return result{
		rps: pick(func(r result) float64 { return r.rps }), p50: pick(func(r result) float64 { return r.p50 }),
		p99: pick(func(r result) float64 { return r.p99 }), cpu: pick(func(r result) float64 { return r.cpu }),
		rssMB: pick(func(r result) float64 { return r.rssMB }), errors: errs,
	}
}
