// Command cluster measures the stored clients of a cluster of gateways at
// scale (issue 19's targets): Caddy instances sharing one redis-server as
// their storage, each trusting the -clients clients stored there
// (client_cert_auth { clients_from_storage refresh 1s }). It prints one
// line per result, each with its target:
//
//	reads per idle refresh  redis key reads (get, mget, zrange, exists of INFO commandstats) of
//	                        -instances gateways over a 10 s idle window, per refresh (<= 2)
//	propagation             -changes clients added (PUT /mtls/clients/<alias>), each through the next
//	                        instance: from the PUT's answer until every instance accepts the client's
//	                        certificate, polled every 20 ms with a new TLS connection (<= refresh + 1 s)
//	cold start              from starting one more Caddy until it accepts the last client imported (< 30 s)
//	memory per client       VmRSS of that instance, having served requests, less that of one whose
//	                        storage (another key_prefix) holds no clients, per stored client (< 2 KB);
//	                        the Go heap in use likewise
//	redis outage            redis stopped for -outage while 8 keep-alive callers call two instances
//	                        (0 failures); once it is back, one change and its propagation, then the
//	                        listing through the admin API, paged, holds every client once
//
// The clients are made with internal/demopki and imported through the admin
// API of a Caddy without sites (so that no gateway reads them while they are
// written), in batches of 250. Every process's output is in a temp dir,
// kept (without redis' data) when the run fails. Missed timing targets are
// printed as MISSED; a failed correctness check (a refused call during the
// outage, a listing not whole) also makes the exit status 1.
//
// Usage, from bench/ (its own module), with a Caddy built with this plugin
// and github.com/pberkel/caddy-storage-redis (make bench-cluster builds one):
//
//	go run ./cluster -caddy ../caddy-test [-clients 100000] [-instances 3] [-refresh 1s] [-changes 20] [-outage 30s] [-pprof dir] [-keep]
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddy-mtls/caddy-mtls/bench/internal/pprof"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

var (
	caddyBin   = flag.String("caddy", "", "Caddy built with this plugin and github.com/pberkel/caddy-storage-redis (required)")
	clientN    = flag.Int("clients", 100000, "stored clients")
	instances  = flag.Int("instances", 3, "gateways sharing the storage")
	refresh    = flag.Duration("refresh", time.Second, "clients_from_storage refresh of the gateways")
	changes    = flag.Int("changes", 20, "changes whose propagation is measured")
	outage     = flag.Duration("outage", 30*time.Second, "how long redis is stopped under load")
	keep       = flag.Bool("keep", false, "keep the temp dir with the processes' logs (and redis' data) after a run that succeeded")
	pprofDir   = flag.String("pprof", "", "save a CPU profile of a gateway over the idle window and heap profiles of the cold-started and the empty instance here")
	idleWindow = 10 * time.Second
)

// loaders is how many goroutines call the gateways during the outage, each
// with a stored client of its own.
const loaders = 8

// errMissed marks a failed correctness check, after its result is printed.
var errMissed = errors.New("a correctness check failed")

func main() {
	flag.Parse()
	if *caddyBin == "" {
		fmt.Fprintln(os.Stderr, "cluster: -caddy is required (a Caddy with this plugin and github.com/pberkel/caddy-storage-redis)")
		os.Exit(2)
	}
	if *clientN < loaders+1 || *instances < 2 || *refresh <= 0 || *changes < 1 || *outage <= 0 {
		fmt.Fprintf(os.Stderr, "cluster: want -clients >= %d, -instances >= 2, -changes >= 1, positive -refresh and -outage\n", loaders+1)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "cluster: interrupted; stopping the processes")
		stopAll()
		os.Exit(130)
	}()
	dir, err := os.MkdirTemp("", "caddy-mtls-cluster")
	if err == nil {
		start := time.Now()
		err = run(dir)
		stopAll()
		fmt.Fprintf(os.Stderr, "the run took %s\n", time.Since(start).Round(time.Second))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		if dir != "" {
			_ = os.RemoveAll(filepath.Join(dir, "redis-data"))
			fmt.Fprintln(os.Stderr, "cluster: the processes' logs are in", dir)
		}
		os.Exit(1)
	}
	if *keep {
		fmt.Fprintln(os.Stderr, "cluster: the processes' logs are in", dir)
		return
	}
	_ = os.RemoveAll(dir)
}

// config is a Caddyfile of the benchmark: a gateway on port trusting the
// clients stored under prefix in redis, as integration/admin_test.go's
// gatewaySite, or (port 0) Caddy with no site, only the admin API.
func config(p *pki, redisAddr, prefix string, port int, backend string) string {
	global := fmt.Sprintf(`{
	admin {admin}
	auto_https off
	storage redis {
		address %s
		key_prefix %s
	}
}
`, redisAddr, prefix)
	if port == 0 {
		return global
	}
	return global + fmt.Sprintf(`https://localhost:%d {
	tls %s %s {
		client_auth {
			mode request
		}
	}
	client_cert_auth {
		clients_from_storage refresh %s
	}
	reverse_proxy %s {
		header_up X-Caller {http.auth.user.id}
		header_up X-Tier {http.auth.user.tier}
	}
}
`, port, p.serverCert, p.serverKey, *refresh, backend)
}

// line prints a result with its target and whether it was met.
func line(met bool, format string, args ...any) {
	verdict := "met"
	if !met {
		verdict = "MISSED"
	}
	fmt.Printf(format+" [%s]\n", append(args, verdict)...)
}

func run(dir string) error {
	n := *clientN
	p, err := newPKI(dir)
	if err != nil {
		return err
	}
	backend, err := startBackend()
	if err != nil {
		return err
	}
	defer backend.Close()
	redisPort, err := freePort()
	if err != nil {
		return err
	}
	redisDir := filepath.Join(dir, "redis-data")
	if err := os.MkdirAll(redisDir, 0o755); err != nil {
		return err
	}
	redis, err := startRedis(redisDir, dir, redisPort)
	if err != nil {
		return err
	}
	const prefix, emptyPrefix = "caddy-mtls-bench", "caddy-mtls-bench-empty"
	cfg := func(prefix string, port int) string { return config(p, redis.addr(), prefix, port, backend.addr) }
	fmt.Printf("Machine: %d cores, %s/%s, Go %s (this program); %d stored clients, %d instances, refresh %s, redis-server on loopback.\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), n, *instances, *refresh)

	// The clients, imported through a Caddy that only serves the admin API.
	start := time.Now()
	fmt.Fprintf(os.Stderr, "making and importing %d clients...\n", n)
	importer, err := startCaddy(dir, "importer", cfg(prefix, 0), 0, false)
	if err != nil {
		return err
	}
	if err := p.importClients(importer.admin, n, loaders); err != nil {
		return err
	}
	importer.stop()
	fmt.Fprintf(os.Stderr, "%d clients made and imported in %s\n", n, time.Since(start).Round(time.Millisecond))

	// The gateways.
	var gws []*proc
	var ports []int
	for i := range *instances {
		port, err := freePort()
		if err != nil {
			return err
		}
		t0 := time.Now()
		gw, err := startCaddy(dir, fmt.Sprintf("gateway-%c", 'a'+i), cfg(prefix, port), port, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "gateway %c listening after %s\n", 'A'+i, time.Since(t0).Round(time.Millisecond))
		gws, ports = append(gws, gw), append(ports, port)
	}
	for _, c := range append(slices.Clone(p.callers), p.last) {
		if _, _, err := p.propagation(c, time.Now(), ports, time.Minute); err != nil {
			return fmt.Errorf("stored client %s: %w", c.Cert.Subject.CommonName, err)
		}
	}

	// 1. Reads per idle refresh.
	time.Sleep(2 * *refresh)
	var profiled chan error
	if *pprofDir != "" {
		if err := os.MkdirAll(*pprofDir, 0o755); err != nil {
			return err
		}
		profiled = make(chan error, 1)
		go func() {
			profiled <- pprof.Save(gws[0].admin, fmt.Sprintf("profile?seconds=%d", int(idleWindow.Seconds())), filepath.Join(*pprofDir, "idle-cpu.pprof"))
		}()
	}
	before, err := commandCalls(redis.addr())
	if err != nil {
		return err
	}
	time.Sleep(idleWindow)
	after, err := commandCalls(redis.addr())
	if err != nil {
		return err
	}
	if profiled != nil {
		if err := <-profiled; err != nil {
			return err
		}
	}
	idleReads := keyReads(after) - keyReads(before)
	refreshes := float64(*instances) * idleWindow.Seconds() / refresh.Seconds()
	perRefresh := float64(idleReads) / refreshes
	var diff []string
	for cmd, calls := range after {
		if d := calls - before[cmd]; d > 0 && cmd != "info" {
			diff = append(diff, fmt.Sprintf("%s %d", cmd, d))
		}
	}
	slices.Sort(diff)
	fmt.Fprintf(os.Stderr, "idle window: redis commands %v\n", diff)
	line(perRefresh <= 2, "1. storage reads per idle refresh: %.2f (%d key reads in %s, %d instances refreshing every %s: %.0f refreshes; target <= 2)",
		perRefresh, idleReads, idleWindow, *instances, *refresh, refreshes)

	// 2. Propagation of one change to every instance.
	target := *refresh + time.Second
	var took []time.Duration
	for k := range *changes {
		c, err := p.clientCA.Issue(demopki.Options{CommonName: fmt.Sprintf("change-%02d", k)})
		if err != nil {
			return err
		}
		// A pause of a random part of the refresh interval: the change
		// would otherwise come right after the refresh that put the last
		// one in force, and each would wait a whole interval.
		time.Sleep(rand.N(*refresh))
		gw := gws[k%len(gws)]
		if err := adminJSON(gw.admin, http.MethodPut, "/mtls/clients/"+c.Cert.Subject.CommonName, putBody(storedClient(k, c)), nil); err != nil {
			return err
		}
		d, _, err := p.propagation(c, time.Now(), ports, time.Minute)
		if err != nil {
			return fmt.Errorf("change %d: %w", k, err)
		}
		took = append(took, d)
	}
	slices.Sort(took)
	median := took[len(took)/2]
	if len(took)%2 == 0 {
		median = (took[len(took)/2-1] + took[len(took)/2]) / 2
	}
	fmt.Fprintf(os.Stderr, "propagation: %v\n", took)
	line(took[len(took)-1] <= target, "2. propagation of one change to all %d instances: median %s, max %s over %d changes (target <= refresh + 1s = %s)",
		*instances, ms(median), ms(took[len(took)-1]), len(took), target)

	// 3. Cold start of one more instance.
	coldPort, err := freePort()
	if err != nil {
		return err
	}
	t0 := time.Now()
	cold, err := startCaddy(dir, "cold", cfg(prefix, coldPort), coldPort, false)
	if err != nil {
		return err
	}
	at, err := pollAccepted(p.handshakeClient(p.last), coldPort, 20*time.Millisecond, 5*time.Minute)
	if err != nil {
		return fmt.Errorf("cold start: %w (see %s)", err, cold.log)
	}
	coldStart := at.Sub(t0)
	line(coldStart < 30*time.Second, "3. cold start: %s from starting a Caddy process until it accepted the last client imported (%d stored; target < 30s)",
		ms(coldStart), n+*changes)

	// 4. Memory per stored client: the cold-started instance against one
	// with no stored clients, both having served the same requests.
	emptyPort, err := freePort()
	if err != nil {
		return err
	}
	empty, err := startCaddy(dir, "empty", cfg(emptyPrefix, emptyPort), emptyPort, true)
	if err != nil {
		return err
	}
	mem := map[*proc]memory{}
	for _, pr := range []*proc{cold, empty} {
		if err := p.serveSome(pr.port); err != nil {
			return err
		}
		if mem[pr], err = measureMemory(pr); err != nil {
			return err
		}
		if *pprofDir != "" {
			if err := pprof.Save(pr.admin, "heap", filepath.Join(*pprofDir, pr.name+"-heap.pprof")); err != nil {
				return err
			}
		}
	}
	stored := float64(n + *changes)
	rssPer := float64(mem[cold].rssKB-mem[empty].rssKB) * 1024 / stored
	heapPer := float64(int64(mem[cold].heap)-int64(mem[empty].heap)) / stored
	line(rssPer < 2048, "4. memory per stored client: %.0f bytes RSS (VmRSS %.0f MB with %d stored clients, %.0f MB with none, after serving %d requests and a GC); Go heap in use %.0f bytes per client (%.0f MB vs %.0f MB) (target < 2 KB)",
		rssPer, float64(mem[cold].rssKB)/1024, int(stored), float64(mem[empty].rssKB)/1024, servedRequests,
		heapPer, float64(mem[cold].heap)/(1<<20), float64(mem[empty].heap)/(1<<20))
	cold.stop()
	empty.stop()

	// 5. Redis stopped under load; back, a change flows and the listing
	// is whole.
	var requests, failures atomic.Int64
	var firstFailure atomic.Value
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	for g := range loaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := p.keepAliveClient(p.callers[g%len(p.callers)])
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				status, err := get(client, ports[(g+i)%2])
				requests.Add(1)
				if err != nil || status != http.StatusOK {
					failures.Add(1)
					if err == nil {
						err = fmt.Errorf("status %d", status)
					}
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("port %d: %v", ports[(g+i)%2], err))
				}
			}
		}()
	}
	time.Sleep(time.Second)
	beforeOutage := requests.Load()
	redis.stop()
	fmt.Fprintf(os.Stderr, "redis stopped for %s...\n", *outage)
	time.Sleep(*outage)
	duringOutage := requests.Load() - beforeOutage
	t0 = time.Now()
	if redis, err = startRedis(redisDir, dir, redisPort); err != nil {
		close(stopLoad)
		wg.Wait()
		return err
	}
	fmt.Fprintf(os.Stderr, "redis back, its data loaded, after %s\n", time.Since(t0).Round(time.Millisecond))
	time.Sleep(time.Second)
	close(stopLoad)
	wg.Wait()
	ok := failures.Load() == 0
	if !ok {
		fmt.Fprintf(os.Stderr, "first failure: %v\n", firstFailure.Load())
	}

	late, err := p.clientCA.Issue(demopki.Options{CommonName: "after-outage"})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		err = adminJSON(gws[0].admin, http.MethodPut, "/mtls/clients/after-outage", putBody(storedClient(0, late)), nil)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("a change after the outage: %w", err)
	}
	lateTook, each, err := p.propagation(late, time.Now(), ports, time.Minute)
	if err != nil {
		return fmt.Errorf("the change after the outage: %w", err)
	}
	fmt.Fprintf(os.Stderr, "the change after the outage, in force on each instance after %v\n", each)
	aliases, err := listAliases(gws[0].admin)
	if err != nil {
		return fmt.Errorf("listing: %w", err)
	}
	want := n + *changes + 1
	seen := make(map[string]bool, len(aliases))
	for _, a := range aliases {
		seen[a] = true
	}
	whole := len(aliases) == want && len(seen) == want && slices.IsSorted(aliases)
	var missed []string
	for _, m := range []struct {
		met  bool
		what string
	}{{ok, "failed requests"}, {lateTook <= target, "propagation after the restart"}, {whole, "listing"}} {
		if !m.met {
			missed = append(missed, m.what)
		}
	}
	if len(missed) > 0 {
		fmt.Fprintf(os.Stderr, "5. missed: %v\n", missed)
	}
	line(len(missed) == 0, "5. redis stopped %s under load: %d requests by %d keep-alive callers to 2 instances (%d while redis was down), %d failed (target 0); after the restart one change in force everywhere in %s (target <= %s); the paged listing holds %d clients, %d distinct, sorted %t (target exactly %d, each once)",
		*outage, requests.Load(), loaders, duringOutage, failures.Load(), ms(lateTook), target, len(aliases), len(seen), slices.IsSorted(aliases), want)
	if !ok || !whole {
		return errMissed
	}
	return nil
}

// ms rounds a duration for printing.
func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// servedRequests is how many requests serveSome sends.
const servedRequests = 400

// serveSome sends servedRequests requests to the gateway on port, half of
// them with a new TLS connection each, from the stored callers.
func (p *pki) serveSome(port int) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(p.callers))
	per := servedRequests / len(p.callers)
	for _, c := range p.callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fresh, kept := p.handshakeClient(c), p.keepAliveClient(c)
			for i := range per {
				client := fresh
				if i%2 == 1 {
					client = kept
				}
				if _, err := get(client, port); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// memory is a process's resident set and Go heap in use.
type memory struct {
	rssKB int64
	heap  uint64
}

// measureMemory reads a Caddy's VmRSS and Go heap in use after a garbage
// collection and a moment for it to settle.
func measureMemory(pr *proc) (memory, error) {
	if err := collectGarbage(pr.admin); err != nil {
		return memory{}, err
	}
	time.Sleep(2 * time.Second)
	rss, err := statusKB(pr.pid(), "VmRSS")
	if err != nil {
		return memory{}, err
	}
	heap, err := heapInuse(pr.admin)
	if err != nil {
		return memory{}, err
	}
	return memory{rssKB: rss, heap: heap}, nil
}
