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
// certificates. Workloads:
//
//	keepalive     connections reused
//	handshake     a new TLS connection per request, no session resumption (with -floor, also
//	              request_site: Caddy that verifies nothing, the floor of any verification cache)
//	handshake_chain  as handshake, with callers issued by an intermediate CA that they send along
//	many_callers  a new connection per request, each with one of -callers distinct certificates
//	header        keep-alive through an nginx load balancer that ends TLS and passes the
//	              certificate in a header (the plugin's header path; vanilla Caddy proxies
//	              without any check, to show what the check costs; nginx does not run it)
//	same_process  keep-alive to the sites of the two -pair systems (default the plugin's and
//	              vanilla Caddy's) in one Caddy process, alternating -slice slices (once in
//	              each order of the sites' blocks, a process each)
//	same_process_handshake  the same with a new TLS connection per request
//	same_process_handshake_chain  the same with callers under an intermediate CA
//	same_process_header  the plugin's header site behind the load balancer against its TLS
//	              site, in one process, keep-alive, alternating as same_process does
//	same_process_header_direct  the same with the load generator in the load balancer's place:
//	              plain HTTP from loopback with the certificate header, so that both sites
//	              get the same generator's load and the load balancer takes no CPU
//	memory        -memory-callers distinct callers, one new connection each, to the Caddy
//	              systems with state per caller (-memory-others to the others): RSS and Go
//	              heap every tenth of the way
//
// With -pin (the default on 2 or more CPUs) the gateway runs alone on the
// last CPU this program may use and everything else (this program, the
// backend, the load balancer) on the others, so that the gateway's own
// ceiling shows.
//
// Usage, from bench/ (its own module): go run ./compare -caddy ../caddy [-duration 7s] [-rounds 3] [-pprof dir]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/caddy-mtls/caddy-mtls/bench/internal/pprof"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

var (
	caddyBin      = flag.String("caddy", "../caddy", "Caddy built with this plugin (the default is where make build puts it, seen from bench/)")
	nginxBin      = flag.String("nginx", "", "nginx binary (default: on PATH, else /usr/sbin/nginx)")
	duration      = flag.Duration("duration", 4*time.Second, "measured time of one run")
	rounds        = flag.Int("rounds", 3, "rounds (each runs every system once per workload)")
	concurrency   = flag.Int("concurrency", 16, "concurrent client connections")
	callerCount   = flag.Int("callers", 10000, "distinct client certificates of the many_callers workload")
	memoryCallers = flag.Int("memory-callers", 100000, "distinct callers of the memory workload")
	memoryOthers  = flag.Int("memory-others", 20000, "callers of the memory workload sent to the Caddy systems that keep no state per caller (rounded down to a tenth of -memory-callers, at least that tenth)")
	systemNames   = flag.String("systems", "plugin,vanilla_caddy,nginx", "the systems to compare, comma-separated (also: vanilla_copy, handler_only, transport_only, request_site, vars_handler)")
	pair          = flag.String("pair", "plugin,vanilla_caddy", "the two Caddy systems of the same_process and same_process_handshake(_chain) workloads; in same_process, NAME:header is the system's header site behind the load balancer, NAME:header_direct the same site with the load generator in the load balancer's place")
	headerSystem  = flag.String("header-system", "plugin", "the Caddy system whose header site and TLS site same_process_header and same_process_header_direct compare (plugin or vanilla_caddy)")
	samePairs     = flag.Int("same-pairs", 20, "pairs of slices of each same_process workload, in each site order")
	sliceLen      = flag.Duration("slice", 500*time.Millisecond, "the length of a same_process slice: short, so that the two of a pair meet the machine in the same state")
	only          = flag.String("workloads", "keepalive,handshake,handshake_chain,many_callers,header,same_process,same_process_handshake,same_process_header,same_process_header_direct,memory", "the workloads to run, comma-separated (also: same_process_handshake_chain)")
	pin           = flag.Bool("pin", len(allowedCPUs()) >= 2, "run the gateway alone on the last CPU this program may use, the rest on the others")
	floor         = flag.Bool("floor", true, "also run request_site in the handshake workload: Caddy whose site only requests a certificate and that verifies nothing, the floor of any verification cache")
	pprofDir      = flag.String("pprof", "", "save CPU and allocation profiles of the Caddy gateways' runs of round 1 here")
)

// pinnedEnv marks the process re-executed under taskset.
const pinnedEnv = "CADDY_MTLS_BENCH_PINNED"

func main() {
	flag.Parse()
	if *samePairs < 1 || *sliceLen <= 0 || *rounds < 1 || *concurrency < 1 || *callerCount < 1 || *memoryCallers < 1 || *memoryOthers < 1 || *duration <= 0 {
		fmt.Fprintln(os.Stderr, "compare: -same-pairs, -slice, -rounds, -concurrency, -callers, -memory-callers, -memory-others and -duration must be positive")
		os.Exit(2)
	}
	if gw := os.Getenv(pinnedEnv); gw != "" {
		// Re-executed below: pinned to the peers' CPUs, the gateway's named.
		*pin, gatewayCPU = true, gw
	} else if *pin {
		// Move this program (and so the peers it starts) off the
		// gateway's CPU; the Go runtime sizes itself to the CPUs it sees at
		// start, hence a new process rather than an affinity call.
		cpus := allowedCPUs()
		if len(cpus) < 2 {
			fmt.Fprintln(os.Stderr, "compare: -pin needs 2 CPUs or more")
			os.Exit(2)
		}
		peers := make([]string, len(cpus)-1)
		for i, c := range cpus[:len(cpus)-1] {
			peers[i] = strconv.Itoa(c)
		}
		taskset, err := exec.LookPath("taskset")
		if err == nil {
			err = syscall.Exec(taskset, append([]string{"taskset", "-c", strings.Join(peers, ",")}, os.Args...),
				append(os.Environ(), pinnedEnv+"="+strconv.Itoa(cpus[len(cpus)-1])))
		}
		fmt.Fprintln(os.Stderr, "compare: pinning:", err)
		os.Exit(1)
	}
	start := time.Now()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
	fmt.Printf("\nThe run took %s.\n", time.Since(start).Round(time.Second))
}

// floorSystem is the system that verifies no certificate at all.
const floorSystem = "request_site"

// gatewayCPU is the CPU the gateway runs on with -pin.
var gatewayCPU string

// allowedCPUs lists the CPUs this process may run on (a container's cpuset
// need not be 0..n-1).
func allowedCPUs() []int {
	var set unix.CPUSet
	var cpus []int
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		for i := 0; i < len(set)*64; i++ {
			if set.IsSet(i) {
				cpus = append(cpus, i)
			}
		}
	}
	if len(cpus) == 0 {
		for i := 0; i < runtime.NumCPU(); i++ {
			cpus = append(cpus, i)
		}
	}
	return cpus
}

// peerCPUs lists the CPUs of the load generator, backend and load balancer,
// for taskset -c: every CPU this (pinned) program may use.
func peerCPUs() string {
	var cpus []string
	for _, c := range allowedCPUs() {
		cpus = append(cpus, strconv.Itoa(c))
	}
	return strings.Join(cpus, ",")
}

func run() error {
	if *nginxBin == "" {
		bin, err := testpeer.NginxBin()
		if err != nil {
			return err
		}
		*nginxBin = bin
	}
	dir, err := os.MkdirTemp("", "caddy-mtls-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if *pprofDir != "" {
		if err := os.MkdirAll(*pprofDir, 0o755); err != nil {
			return err
		}
	}
	gwCPUs, gwWorkers, peerWorkers := "", runtime.NumCPU(), runtime.NumCPU()
	if *pin {
		// runtime.NumCPU is the peers' share here: the process is pinned.
		gwCPUs, gwWorkers = gatewayCPU, 1
	}
	fmt.Fprintf(os.Stderr, "making %d caller certificates...\n", *callerCount)
	p, err := makePKI(dir, *callerCount)
	if err != nil {
		return err
	}
	bePort := freePort()
	backend, err := startNginx(dir, "backend", "", peerWorkers, fmt.Sprintf(`
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
	all := allSystems(p, dir, gwCPUs, gwWorkers, bePort)
	var systems []system
	for _, name := range strings.Split(*systemNames, ",") {
		i := slices.IndexFunc(all, func(sys system) bool { return sys.name == name })
		if i < 0 {
			return fmt.Errorf("-systems: unknown system %q", name)
		}
		systems = append(systems, all[i])
	}

	// The handshake floor: the systems of the handshake workload, and of the
	// table, take request_site too.
	printed, handshakeSystems := systems, systems
	if *floor && !slices.ContainsFunc(systems, func(sys system) bool { return sys.name == floorSystem }) {
		i := slices.IndexFunc(all, func(sys system) bool { return sys.name == floorSystem })
		printed = append(slices.Clone(systems), all[i])
		handshakeSystems = printed
	}

	var workloads []string
	memory := false
	type sameProcessRunArgs struct {
		wl    string
		sides [2]side
	}
	var sameProcess []sameProcessRunArgs
	for _, wl := range strings.Split(*only, ",") {
		switch wl {
		case "memory":
			memory = true
		case "same_process", "same_process_handshake", "same_process_handshake_chain", "same_process_header", "same_process_header_direct":
			sides, err := sameProcessSides(wl, all) // checked before any run, not after the others
			if err != nil {
				return err
			}
			sameProcess = append(sameProcess, sameProcessRunArgs{wl, sides})
		case "keepalive", "handshake", "handshake_chain", "many_callers", "header":
			workloads = append(workloads, wl)
		default:
			return fmt.Errorf("-workloads: unknown workload %q", wl)
		}
	}
	results := map[string]map[string][]result{}
	for _, wl := range workloads {
		results[wl] = map[string][]result{}
	}
	for r := 1; r <= *rounds; r++ {
		for _, wl := range workloads {
			// Each round starts with the next system, so that none always
			// runs first (or right after a given other one).
			these := systems
			if wl == "handshake" {
				these = handshakeSystems
			}
			for i := range these {
				sys := these[(i+r-1)%len(these)]
				res, ran, err := measure(p, dir, sys, wl, peerWorkers, r == 1)
				if err != nil {
					return err
				}
				if !ran {
					continue
				}
				results[wl][sys.name] = append(results[wl][sys.name], res)
				fmt.Fprintf(os.Stderr, "round %d %-15s %-13s %8.0f req/s p50 %6.2f ms p99 %6.2f ms cpu %.2f (%.0f µs/req, %.0f allocs/req, %.1f reads+writes/req) rss %.0f MB errors %d\n",
					r, wl, sys.name, res.rps, res.p50, res.p99, res.cpu, res.cpuPerReq, res.allocs, res.ioCalls, res.rssMB, res.errors)
			}
		}
	}

	pinning := "not pinned"
	if *pin {
		pinning = fmt.Sprintf("gateway pinned to CPU %s, load generator, backend and load balancer to CPU %s", gwCPUs, peerCPUs())
	}
	fmt.Printf("Machine: %d cores, %s/%s, Go %s; %s; %d rounds of %s per system and workload, %d connections.\n\n",
		cpuCount(), runtime.GOOS, runtime.GOARCH, runtime.Version(), pinning, *rounds, *duration, *concurrency)
	if len(workloads) > 0 {
		printResults(workloads, printed, results)
	}
	for _, sp := range sameProcess {
		if err := sameProcessRun(p, dir, gwCPUs, peerWorkers, sp.wl, sp.sides); err != nil {
			return err
		}
	}
	if memory {
		return memoryRun(p, dir, systems)
	}
	return nil
}

// side is one half of a same_process comparison: a site of the process and
// the load sent to it.
type side struct {
	name  string
	site  func(port int) string
	load  string // the loader's workload: keepalive, header_direct, handshake or handshake_chain
	viaLB bool   // through the nginx load balancer, which ends TLS (the header path)
}

// sameProcessSides returns the two sides of a same_process workload: the
// -pair systems' TLS sites (or, for a name with the suffix :header, its
// header site behind the load balancer) with keep-alive load (same_process)
// or a new connection per request (same_process_handshake, _chain), or the
// -header-system's header site behind the load balancer and its TLS site,
// keep-alive (same_process_header).
func sameProcessSides(wl string, all []system) ([2]side, error) {
	find := func(name string) (system, bool) {
		i := slices.IndexFunc(all, func(sys system) bool { return sys.name == name && sys.site != nil })
		if i < 0 {
			return system{}, false
		}
		return all[i], true
	}
	load, names, flagName := "keepalive", strings.Split(*pair, ","), "-pair"
	switch wl {
	case "same_process_handshake":
		load = "handshake"
	case "same_process_handshake_chain":
		load = "handshake_chain"
	case "same_process_header":
		names, flagName = []string{*headerSystem + ":header", *headerSystem}, "-header-system"
	case "same_process_header_direct":
		names, flagName = []string{*headerSystem + ":header_direct", *headerSystem}, "-header-system"
	}
	if len(names) != 2 {
		return [2]side{}, fmt.Errorf("-pair %q: want two Caddy systems", *pair)
	}
	var sides [2]side
	for i, name := range names {
		sysName, path, hasPath := strings.Cut(name, ":")
		sys, ok := find(sysName)
		if !ok {
			return [2]side{}, fmt.Errorf("%s: %q is not a Caddy system", flagName, sysName)
		}
		sides[i] = side{name: name, site: sys.site, load: load}
		if hasPath {
			if path != "header" && path != "header_direct" {
				return [2]side{}, fmt.Errorf("%s: %q: a system's sites are NAME (TLS), NAME:header and NAME:header_direct", flagName, name)
			}
			if load != "keepalive" {
				return [2]side{}, fmt.Errorf("%s: the header path is measured with keep-alive load only, not in %s", flagName, wl)
			}
			if sys.headerSite == nil {
				return [2]side{}, fmt.Errorf("%s: %s has no header site", flagName, sysName)
			}
			sides[i] = side{name: sysName + "_" + path, site: sys.headerSite, load: "keepalive", viaLB: true}
			if path == "header_direct" {
				sides[i].load, sides[i].viaLB = "header_direct", false
			}
		}
	}
	return sides, nil
}

// sameProcessTitle says what a same_process workload compares.
var sameProcessTitle = map[string]string{
	"same_process":                 "Keep-alive",
	"same_process_handshake":       "A new TLS connection per request",
	"same_process_handshake_chain": "A new TLS connection per request, callers under an intermediate CA",
	"same_process_header":          "Keep-alive, the header path behind the nginx load balancer against the TLS path",
	"same_process_header_direct":   "Keep-alive, the header path with the load generator in the load balancer's place against the TLS path",
}

// sameProcessRun serves the two sides' sites from one Caddy process on cpus
// and alternates load between them in slices of -slice: the
// per-process spread (see vanilla_copy) and the machine's drift drop out of
// the ratio. It runs twice, in a process with the sites in one order and in
// one with them in the other, -same-pairs pairs each.
func sameProcessRun(p *pki, dir, cpus string, lbWorkers int, wl string, sides [2]side) error {
	var rpsAll, cpuAll []float64
	var text []string
	for order := 0; order < 2; order++ {
		rps, cpu, err := sameProcessPairs(p, dir, cpus, lbWorkers, wl, sides, order == 1)
		if err != nil {
			return err
		}
		rpsAll, cpuAll = append(rpsAll, rps...), append(cpuAll, cpu...)
		first := sides[order].name
		text = append(text, fmt.Sprintf("- %s's site first: req/s %s (median %.3f); requests per CPU second %s (median %.3f)",
			first, ratioList(rps), medianOf(rps), ratioList(cpu), medianOf(cpu)))
	}
	a, b := sides[0].name, sides[1].name
	fmt.Printf("\n%s (%s), %s's site and %s's served by one process, %d pairs of %s slices in each of two processes (one per order of the sites' blocks), ratios %s/%s:\n%s\n- median of all: req/s %.3f, requests per CPU second %.3f.\n",
		sameProcessTitle[wl], wl, a, b, *samePairs, *sliceLen, a, b, strings.Join(text, "\n"), medianOf(rpsAll), medianOf(cpuAll))
	return nil
}

// ratioList prints ratios to three places.
func ratioList(ratios []float64) string {
	parts := make([]string, len(ratios))
	for i, r := range ratios {
		parts[i] = fmt.Sprintf("%.3f", r)
	}
	return strings.Join(parts, ", ")
}

// sameProcessPairs runs one process of sameProcessRun, with the sites'
// blocks in the other order when swapped, and returns, pair by pair, the
// ratios of the first side's req/s to the second's and of its requests per
// CPU second of the gateway (which the peers' speed does not move) to the
// second's.
func sameProcessPairs(p *pki, dir, cpus string, lbWorkers int, wl string, sides [2]side, swapped bool) (rpsRatios, cpuRatios []float64, err error) {
	ports := [2]int{freePort(), freePort()}
	config := sides[0].site(ports[0]) + sides[1].site(ports[1])
	if swapped {
		config = sides[1].site(ports[1]) + sides[0].site(ports[0])
	}
	name := wl
	if swapped {
		name += "-swapped"
	}
	pr, err := startCaddy(dir, name, cpus, config, ports[0])
	if err != nil {
		return nil, nil, err
	}
	defer pr.stop()
	if err := waitPort(ports[1]); err != nil {
		return nil, nil, err
	}
	pid := pr.cmd.Process.Pid
	var urls [2]string
	// One set of clients a side for the whole process: on keep-alive each
	// slice measures requests on connections made in the warm-up, not
	// handshakes.
	var loaders [2]*loader
	for k, sd := range sides {
		port := ports[k]
		if sd.viaLB {
			port = freePort()
			lb, err := startLB(p, filepath.Join(dir, name, strconv.Itoa(k)), lbWorkers, port, ports[k])
			if err != nil {
				return nil, nil, err
			}
			defer lb.stop()
		}
		urls[k] = fmt.Sprintf("https://localhost:%d/", port)
		if sd.load == "header_direct" {
			urls[k] = fmt.Sprintf("http://127.0.0.1:%d/", port)
		}
		loaders[k] = newLoader(p, sd.load)
		defer loaders[k].close()
	}
	slice := *sliceLen
	for k := range sides {
		loaders[k].run(urls[k], time.Second) // warm-up
	}
	for i := 0; i < *samePairs; i++ {
		var rps, perCPU [2]float64
		for j := 0; j < 2; j++ {
			k := (i + j) % 2 // alternate which goes first
			before, err := cpuNanos(pid)
			if err != nil {
				return nil, nil, err
			}
			res := loaders[k].run(urls[k], slice)
			if res.errors > 0 {
				return nil, nil, fmt.Errorf("%s: %d errors", wl, res.errors)
			}
			after, err := cpuNanos(pid)
			if err != nil {
				return nil, nil, err
			}
			if after <= before || res.rps == 0 {
				return nil, nil, fmt.Errorf("%s: no CPU time or no requests in a slice", wl)
			}
			rps[k] = res.rps
			perCPU[k] = res.rps * slice.Seconds() / (float64(after-before) / 1e9)
		}
		rpsRatios = append(rpsRatios, rps[0]/rps[1])
		cpuRatios = append(cpuRatios, perCPU[0]/perCPU[1])
		fmt.Fprintf(os.Stderr, "%s (swapped %v) pair %d: %s %.0f req/s (%.0f µs/req), %s %.0f req/s (%.0f µs/req)\n",
			wl, swapped, i+1, sides[0].name, rps[0], 1e6/perCPU[0], sides[1].name, rps[1], 1e6/perCPU[1])
	}
	return rpsRatios, cpuRatios, nil
}

// cpuCount is the machine's CPU count (runtime.NumCPU is this process's
// share once pinned).
func cpuCount() int {
	data, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(string(data)), ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, _ := strconv.Atoi(lo)
		b := a
		if found {
			b, _ = strconv.Atoi(hi)
		}
		n += b - a + 1
	}
	return n
}

// measure runs workload wl against sys once, after a warm-up, and reports
// whether the system does that workload at all.
func measure(p *pki, dir string, sys system, wl string, lbWorkers int, profile bool) (result, bool, error) {
	port := freePort()
	pr, err := sys.start(wl, port)
	if err != nil || pr == nil {
		return result{}, false, err
	}
	defer pr.stop()
	url := fmt.Sprintf("https://localhost:%d/", port)
	if wl == "header" {
		lbPort := freePort()
		lb, err := startLB(p, dir, lbWorkers, lbPort, port)
		if err != nil {
			return result{}, false, err
		}
		defer lb.stop()
		url = fmt.Sprintf("https://localhost:%d/", lbPort)
	}
	load(url, p, wl, time.Second) // warm-up
	var profiled chan error
	if profile && *pprofDir != "" && pr.admin != 0 {
		profiled = make(chan error, 1)
		path := filepath.Join(*pprofDir, fmt.Sprintf("%s-%s.pprof", sys.name, wl))
		go func() {
			profiled <- pprof.Save(fmt.Sprintf("127.0.0.1:%d", pr.admin), fmt.Sprintf("profile?seconds=%d", max(1, int(duration.Seconds())-1)), path)
		}()
	}
	pids := pr.pids()
	var msBefore memStats
	if pr.admin != 0 {
		if msBefore, err = readMemStats(pr.admin); err != nil {
			return result{}, false, err
		}
	}
	before, callsBefore := cpuTicks(pids), ioCalls(pids)
	res := load(url, p, wl, *duration)
	res.cpu = float64(cpuTicks(pids)-before) / 100 / duration.Seconds() // USER_HZ is 100 on Linux
	if res.rps > 0 {
		res.cpuPerReq = res.cpu / res.rps * 1e6
		res.ioCalls = float64(ioCalls(pids)-callsBefore) / (res.rps * duration.Seconds())
	}
	res.rssMB = float64(statusKB(pids, "VmHWM")) / 1024
	if pr.admin != 0 && res.rps > 0 {
		msAfter, err := readMemStats(pr.admin)
		if err != nil {
			return result{}, false, err
		}
		res.allocs = float64(msAfter.Mallocs-msBefore.Mallocs) / (res.rps * duration.Seconds())
	}
	if profiled != nil {
		err := <-profiled
		if err == nil {
			err = pprof.Save(fmt.Sprintf("127.0.0.1:%d", pr.admin), "allocs", filepath.Join(*pprofDir, fmt.Sprintf("%s-%s.allocs.pprof", sys.name, wl)))
		}
		if err != nil {
			return result{}, false, fmt.Errorf("profiles of %s %s: %w", sys.name, wl, err)
		}
	}
	return res, true, nil
}

func printResults(workloads []string, systems []system, results map[string]map[string][]result) {
	fmt.Println("| workload | system | req/s | p50 ms | p99 ms | CPU cores | CPU µs/req | allocs/req | reads+writes/req | peak RSS MB | errors | req/s vs vanilla Caddy | req/s vs nginx |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	ratio := func(a, b result) string {
		if b.rps == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", a.rps/b.rps)
	}
	med := map[string]map[string]result{}
	for _, wl := range workloads {
		med[wl] = map[string]result{}
		for _, sys := range systems {
			if rs := results[wl][sys.name]; len(rs) > 0 {
				med[wl][sys.name] = median(rs)
			}
		}
		for _, sys := range systems {
			m, ok := med[wl][sys.name]
			if !ok {
				continue
			}
			allocs := "-" // nginx: not a Go program
			if m.allocs > 0 {
				allocs = fmt.Sprintf("%.0f", m.allocs)
			}
			fmt.Printf("| %s | %s | %.0f | %.2f | %.2f | %.2f | %.0f | %s | %.1f | %.0f | %d | %s | %s |\n", wl, sys.name, m.rps, m.p50, m.p99, m.cpu,
				m.cpuPerReq, allocs, m.ioCalls, m.rssMB, m.errors, ratio(m, med[wl]["vanilla_caddy"]), ratio(m, med[wl]["nginx"]))
		}
	}
	f, okF := med["handshake"][floorSystem]
	v, okV := med["handshake"]["vanilla_caddy"]
	if pl, okP := med["handshake"]["plugin"]; okF && okV && okP && f.cpuPerReq > 0 && pl.cpuPerReq > 0 {
		fmt.Printf("\nHandshake floor: %s (the site only requests a certificate; nothing verifies it) %.0f µs of gateway CPU per request; vanilla Caddy spends %.3fx that, the most any verification cache can save; vanilla Caddy spends %.3fx the plugin's %.0f µs.\n",
			floorSystem, f.cpuPerReq, v.cpuPerReq/f.cpuPerReq, v.cpuPerReq/pl.cpuPerReq, pl.cpuPerReq)
	}
	h, okH := med["header"]["plugin"]
	t, okT := med["keepalive"]["plugin"]
	if okH && okT {
		fmt.Printf("\nPlugin, header path (header) vs TLS path (keepalive): req/s %s; gateway CPU per request %.0f µs vs %.0f µs (%.3f).\n",
			ratio(h, t), h.cpuPerReq, t.cpuPerReq, t.cpuPerReq/h.cpuPerReq)
	}
}

// othersCallers is how many of n callers the memory workload sends to a
// system without state per caller: -memory-others, rounded down to a
// multiple of step, at least step and at most n.
func othersCallers(n, step int) int {
	return min(max(min(*memoryOthers, n)/step*step, step), n)
}

// keepsPerCaller reports whether a system keeps state per caller (the
// verdict cache of client_cert_auth).
func keepsPerCaller(name string) bool { return name == "plugin" || name == "handler_only" }

// memoryRun sends -memory-callers distinct callers, one new connection
// each, to the systems that keep state per caller (-memory-others, rounded
// down to a tenth of -memory-callers, to the other Caddy systems), and
// prints its RSS and Go heap every tenth of the way.
func memoryRun(p *pki, dir string, systems []system) error {
	n := *memoryCallers
	step := max(n/10, 1)
	type sample struct{ rssMB, heapMB float64 }
	var names []string
	samples := map[string][]sample{}
	for _, sys := range systems {
		if sys.site == nil {
			continue // nginx: no Go heap to read
		}
		port := freePort()
		pr, err := sys.start("memory", port)
		if err != nil {
			return err
		}
		names = append(names, sys.name)
		addr := fmt.Sprintf("localhost:%d", port)
		start := time.Now()
		limit := n
		if !keepsPerCaller(sys.name) {
			limit = othersCallers(n, step)
		}
		for done := 0; ; done += step {
			if done > 0 {
				failed, err := callers(p, addr, done-step, done)
				if failed > 0 {
					pr.stop()
					return fmt.Errorf("memory %s: %d of %d calls failed; first: %w", sys.name, failed, step, err)
				}
			}
			ms, err := readMemStats(pr.admin)
			if err != nil {
				pr.stop()
				return fmt.Errorf("memory %s: %w", sys.name, err)
			}
			s := sample{float64(statusKB(pr.pids(), "VmRSS")) / 1024, float64(ms.HeapInuse) / (1 << 20)}
			samples[sys.name] = append(samples[sys.name], s)
			fmt.Fprintf(os.Stderr, "memory %-13s %7d callers rss %.0f MB heap %.0f MB (%s)\n", sys.name, done, s.rssMB, s.heapMB, time.Since(start).Round(time.Second))
			if done+step > limit {
				break
			}
		}
		pr.stop()
	}
	if len(names) == 0 {
		return fmt.Errorf("memory: no Caddy system among -systems")
	}
	fmt.Printf("\nMemory: %d distinct callers (%d to systems without state per caller), one new connection each, %d at a time; RSS and Go heap in use (MB) after each step.\n\n",
		n, othersCallers(n, step), *concurrency)
	head, rule := "| callers |", "|---|"
	for _, name := range names {
		head += fmt.Sprintf(" %s RSS | %s heap |", name, name)
		rule += "---|---|"
	}
	fmt.Println(head)
	fmt.Println(rule)
	rows := 0
	for _, name := range names {
		rows = max(rows, len(samples[name]))
	}
	for i := range rows {
		row := fmt.Sprintf("| %d |", i*step)
		for _, name := range names {
			if i >= len(samples[name]) {
				row += " - | - |" // a system without state per caller, sent fewer callers
				continue
			}
			s := samples[name][i]
			row += fmt.Sprintf(" %.0f | %.0f |", s.rssMB, s.heapMB)
		}
		fmt.Println(row)
	}
	return nil
}
