package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

type pki struct {
	clientCA, serverCA, beCA *demopki.Cert
	callers                  []tls.Certificate // issued by clientCA
	chainCallers             []tls.Certificate // issued by an intermediate of clientCA, sent with it
	files                    map[string]string
	// nextCaller goes on from run to run (warm-up included), so that
	// many_callers presents each caller once before coming back to the first.
	nextCaller atomic.Int64
}

func makePKI(dir string, n int) (*pki, error) {
	p := &pki{files: map[string]string{}}
	var err error
	if p.clientCA, err = demopki.NewCA("Bench Clients"); err != nil {
		return nil, err
	}
	if p.serverCA, err = demopki.NewCA("Bench Server CA"); err != nil {
		return nil, err
	}
	if p.beCA, err = demopki.NewCA("Bench Backend CA"); err != nil {
		return nil, err
	}
	server, err := p.serverCA.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})
	if err != nil {
		return nil, err
	}
	gw, err := p.beCA.Issue(demopki.Options{CommonName: "gateway"})
	if err != nil {
		return nil, err
	}
	for name, c := range map[string]*demopki.Cert{"client-ca": p.clientCA, "server-ca": p.serverCA, "backend-ca": p.beCA, "server": server, "gateway": gw} {
		cert, key, err := c.WriteFiles(dir, name)
		if err != nil {
			return nil, err
		}
		p.files[name], p.files[name+"-key"] = cert, key
	}
	for i := 0; i < n; i++ {
		c, err := p.caller(i)
		if err != nil {
			return nil, err
		}
		p.callers = append(p.callers, c)
	}
	inter, err := p.clientCA.Issue(demopki.Options{CommonName: "Bench Clients Intermediate", IsCA: true})
	if err != nil {
		return nil, err
	}
	for i := 0; i < *concurrency; i++ {
		c, err := inter.Issue(demopki.Options{CommonName: fmt.Sprintf("chain-caller-%d", i)})
		if err != nil {
			return nil, err
		}
		p.chainCallers = append(p.chainCallers, c.TLSCertificate())
	}
	return p, nil
}

// caller issues the certificate of the i-th distinct caller.
func (p *pki) caller(i int) (tls.Certificate, error) {
	c, err := p.clientCA.Issue(demopki.Options{CommonName: fmt.Sprintf("caller-%d", i)})
	if err != nil {
		return tls.Certificate{}, err
	}
	return c.TLSCertificate(), nil
}

// clientConfig is the load generator's TLS client config. Its key exchange
// is plain X25519: Go would offer the hybrid post-quantum X25519MLKEM768,
// which Caddy takes and Debian 12's nginx (OpenSSL 3.0) cannot, and the
// handshakes would not do the same work. P-256 is listed too: OpenSSL takes
// an ECDSA P-256 server certificate only from a client that lists the curve.
func (p *pki) clientConfig() *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(p.serverCA.Cert)
	return &tls.Config{RootCAs: roots, ServerName: "localhost", CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
}

type result struct {
	rps, p50, p99, cpu float64 // cpu in cores
	cpuPerReq          float64 // µs of the gateway's CPU per request
	rssMB              float64
	allocs             float64 // Go allocations per request (Caddy only)
	ioCalls            float64 // read and write system calls per request
	errors             int64
}

// load runs one workload against url for d: keepalive and header reuse
// connections, the others make a new one per request.
func load(url string, p *pki, workload string, d time.Duration) result {
	l := newLoader(p, workload)
	defer l.close()
	return l.run(url, d)
}

// loader is the load generator's *concurrency clients, one a connection,
// kept from one run to the next (same_process's slices), so that a run of
// keep-alive load does not start with new handshakes.
type loader struct {
	clients []*http.Client
	// certHeader holds each client's certificate as the load balancer sends
	// it (X-Client-Cert, URL-encoded PEM), for the header_direct workload.
	certHeader []string
}

// lbCertField is the header field in which the load balancer passes the
// caller's certificate to the gateway.
const lbCertField = "X-Client-Cert"

func newLoader(p *pki, workload string) *loader {
	newConns := workload != "keepalive" && workload != "header" && workload != "header_direct"
	l := &loader{}
	for w := 0; w < *concurrency; w++ {
		if workload == "header_direct" {
			// In the load balancer's place: plain HTTP from the loopback
			// address, the caller's certificate in the header.
			// nginx's value ends with the PEM's last newline.
			l.certHeader = append(l.certHeader, certcodec.Encode(p.callers[w%len(p.callers)].Certificate[0], certcodec.URLPEM)+"%0A")
			l.clients = append(l.clients, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 10 * time.Second})
			continue
		}
		cfg := p.clientConfig()
		cfg.Certificates = []tls.Certificate{p.callers[w%len(p.callers)]}
		switch workload {
		case "handshake_chain":
			cfg.Certificates = []tls.Certificate{p.chainCallers[w%len(p.chainCallers)]}
		case "many_callers":
			cfg.Certificates = nil
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return &p.callers[int(p.nextCaller.Add(1))%len(p.callers)], nil
			}
		}
		tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 1, DisableKeepAlives: newConns}
		l.clients = append(l.clients, &http.Client{Transport: tr, Timeout: 10 * time.Second})
	}
	return l
}

// close closes the clients' idle connections.
func (l *loader) close() {
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
}

// run sends requests to url from every client for d.
func (l *loader) run(url string, d time.Duration) result {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lat  []time.Duration
		errs atomic.Int64
	)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for i, client := range l.clients {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return result{errors: 1}
		}
		if l.certHeader != nil {
			req.Header.Set(lbCertField, l.certHeader[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				start := time.Now()
				resp, err := client.Do(req)
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
		}()
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

// callOnce makes one request from caller i on a new TLS connection to addr.
func callOnce(p *pki, addr string, i int) error {
	cert, err := p.caller(i)
	if err != nil {
		return err
	}
	cfg := p.clientConfig()
	cfg.Certificates = []tls.Certificate{cert}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("caller %d: status %d", i, resp.StatusCode)
	}
	return nil
}

// callers makes one request from each caller in [from, to), *concurrency at
// a time, and returns how many failed and the first failure.
func callers(p *pki, addr string, from, to int) (int64, error) {
	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		mu     sync.Mutex
		failed int64
		first  error
	)
	next.Store(int64(from))
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if err := callOnce(p, addr, i); err != nil {
					mu.Lock()
					if failed++; first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return failed, first
}

// medianOf returns the median of v.
func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// median returns the per-field medians of rs (each field's own median over
// the runs: CPU per request is each run's, not one run's CPU over another's
// rate).
func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return medianOf(v)
	}
	var errs int64
	for _, r := range rs {
		errs += r.errors
	}
	return result{
		rps: pick(func(r result) float64 { return r.rps }), p50: pick(func(r result) float64 { return r.p50 }),
		p99: pick(func(r result) float64 { return r.p99 }), cpu: pick(func(r result) float64 { return r.cpu }),
		cpuPerReq: pick(func(r result) float64 { return r.cpuPerReq }),
		rssMB:     pick(func(r result) float64 { return r.rssMB }), allocs: pick(func(r result) float64 { return r.allocs }),
		ioCalls: pick(func(r result) float64 { return r.ioCalls }), errors: errs,
	}
}
