package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// importBatch is how many clients one POST /mtls/clients stores.
const importBatch = 250

// adminClient calls the admin endpoints. A listing page or a batch of
// clients takes far less than its timeout.
var adminClient = &http.Client{Timeout: 2 * time.Minute}

// pki is the benchmark's certificates: the gateways' server certificate
// and the few stored clients whose keys the load uses.
type pki struct {
	serverCA              *demopki.Cert
	serverCert, serverKey string
	clientCA              *demopki.Cert
	callers               []*demopki.Cert // stored clients kept with their keys
	last                  *demopki.Cert   // the last client imported
}

func newPKI(dir string) (*pki, error) {
	p := &pki{}
	var err error
	if p.serverCA, err = demopki.NewCA("Cluster Bench Server CA"); err != nil {
		return nil, err
	}
	if p.clientCA, err = demopki.NewCA("Cluster Bench Clients"); err != nil {
		return nil, err
	}
	server, err := p.serverCA.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}})
	if err != nil {
		return nil, err
	}
	if p.serverCert, p.serverKey, err = server.WriteFiles(dir, "server"); err != nil {
		return nil, err
	}
	return p, nil
}

// newClient is a client to store, as POST /mtls/clients takes it.
type newClient struct {
	Alias       string   `json:"alias"`
	Certificate string   `json:"certificate"`
	Tier        string   `json:"tier,omitempty"`
	Groups      []string `json:"groups,omitempty"`
}

func alias(i int) string { return fmt.Sprintf("client-%06d", i) }

// storedClient describes client i, with a tier and a group as real ones
// have.
func storedClient(i int, c *demopki.Cert) newClient {
	return newClient{Alias: alias(i), Certificate: string(c.CertPEM()), Tier: fmt.Sprintf("t%d", i%3), Groups: []string{fmt.Sprintf("g%d", i%4)}}
}

// importClients makes n client certificates, on every CPU, and stores
// them through the admin endpoint admin in batches of importBatch as they
// are made. It keeps the keys of callers of them (spread over the range)
// and of the last one imported, whose alias is alias(n-1).
func (p *pki) importClients(admin string, n, callers int) error {
	step := max((n-1)/callers, 1)
	made := make(chan newClient, 4*importBatch)
	kept := make(chan *demopki.Cert, callers+1)
	idx := make(chan int)
	errs := make(chan error, runtime.NumCPU())
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				c, err := p.clientCA.Issue(demopki.Options{CommonName: alias(i)})
				if err != nil {
					errs <- err
					return
				}
				if i%step == 0 && i/step < callers {
					kept <- c
				}
				made <- storedClient(i, c)
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer close(idx)
		for i := range n - 1 {
			select {
			case idx <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(made) }()

	batch := make([]newClient, 0, importBatch)
	imported := 0
	start := time.Now()
	flush := func() error {
		if err := adminJSON(admin, http.MethodPost, "/mtls/clients", map[string]any{"clients": batch}, nil); err != nil {
			return fmt.Errorf("importing clients: %w", err)
		}
		imported += len(batch)
		batch = batch[:0]
		if imported%(importBatch*40) == 0 {
			fmt.Fprintf(os.Stderr, "  %d clients imported (%s)\n", imported, time.Since(start).Round(time.Second))
		}
		return nil
	}
	for c := range made {
		batch = append(batch, c)
		if len(batch) == importBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	select {
	case err := <-errs:
		return fmt.Errorf("making a client certificate: %w", err)
	default:
	}
	// The last client imported, in the last batch.
	last, err := p.clientCA.Issue(demopki.Options{CommonName: alias(n - 1)})
	if err != nil {
		return err
	}
	batch = append(batch, storedClient(n-1, last))
	if err := flush(); err != nil {
		return err
	}
	close(kept)
	for c := range kept {
		p.callers = append(p.callers, c)
	}
	p.last = last
	return nil
}

// adminJSON calls a Caddy's admin endpoint with body as JSON (nil: none)
// and decodes a 2xx answer into out (nil: not decoded).
func adminJSON(admin, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, "http://"+admin+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := adminClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// tlsConfig presents cert to a gateway whose certificate the server CA
// issued.
func (p *pki) tlsConfig(cert *demopki.Cert) *tls.Config {
	cfg := &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "localhost"}
	cfg.RootCAs.AddCert(p.serverCA.Cert)
	cfg.Certificates = []tls.Certificate{cert.TLSCertificate()}
	return cfg
}

// handshakeClient makes a new TLS connection (a full handshake) for each
// request, presenting cert.
func (p *pki) handshakeClient(cert *demopki.Cert) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: p.tlsConfig(cert), DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
}

// keepAliveClient reuses its connections.
func (p *pki) keepAliveClient(cert *demopki.Cert) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: p.tlsConfig(cert), MaxIdleConnsPerHost: 4},
		Timeout:   10 * time.Second,
	}
}

// get calls a gateway's site and returns the status.
func get(client *http.Client, port int) (int, error) {
	resp, err := client.Get(fmt.Sprintf("https://localhost:%d/", port))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// pollAccepted calls the gateway on port with a new connection every
// interval until it answers 200, and returns when it did, or an error
// after timeout.
func pollAccepted(client *http.Client, port int, interval, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		status, err := get(client, port)
		now := time.Now()
		if err == nil && status == http.StatusOK {
			return now, nil
		}
		if now.After(deadline) {
			if err == nil {
				err = fmt.Errorf("status %d", status)
			}
			return time.Time{}, fmt.Errorf("not accepted on port %d after %s: %w", port, timeout, err)
		}
		time.Sleep(interval)
	}
}

// propagation returns how long after from every gateway on ports accepted
// cert, each polled every 20 ms with a new TLS connection, and how long
// each took.
func (p *pki) propagation(cert *demopki.Cert, from time.Time, ports []int, timeout time.Duration) (time.Duration, []time.Duration, error) {
	client := p.handshakeClient(cert)
	each := make([]time.Duration, len(ports))
	errs := make([]error, len(ports))
	var wg sync.WaitGroup
	for i, port := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := pollAccepted(client, port, 20*time.Millisecond, timeout)
			each[i], errs[i] = at.Sub(from), err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, each, err
	}
	return slices.Max(each), each, nil
}

// listAliases pages through every stored client with the admin API
// (limit=1000, after the last alias of a page, until a short page) and
// returns their aliases in the order listed.
func listAliases(admin string) ([]string, error) {
	const page = 1000
	var aliases []string
	after := ""
	for {
		q := url.Values{"limit": {fmt.Sprint(page)}}
		if after != "" {
			q.Set("after", after)
		}
		var infos []struct {
			Alias string `json:"alias"`
		}
		if err := adminJSON(admin, http.MethodGet, "/mtls/clients?"+q.Encode(), nil, &infos); err != nil {
			return aliases, err
		}
		for _, info := range infos {
			aliases = append(aliases, info.Alias)
		}
		if len(infos) < page {
			return aliases, nil
		}
		after = infos[len(infos)-1].Alias
	}
}

// putBody is the body of PUT /mtls/clients/<alias> for c: the alias is in
// the path.
func putBody(c newClient) map[string]any {
	return map[string]any{"certificate": c.Certificate, "tier": c.Tier, "groups": c.Groups}
}
