package integration

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// TestManyIdentities: 1000 client identities chosen per request from one
// keystore keep the gateway's connection pools, goroutines and backend
// connections within the max_pools bound while every request reaches the
// backend with its own identity; once idle, the pools' connections close
// and goroutines and file descriptors return to their baseline.
func TestManyIdentities(t *testing.T) {
	const (
		identities  = 1000
		maxPools    = 50
		concurrency = 8
		idle        = 5 * time.Second // keepalive: idle connections close after this
	)
	e := newEnv(t)
	ca := demopki.Must(demopki.NewCA("backend clients"))
	backend := testpeer.StartBackend(t, "ids", ca)
	entries := make([]demopki.JKSEntry, identities)
	for i := range entries {
		alias := fmt.Sprintf("id-%04d", i)
		entries[i] = demopki.JKSEntry{Alias: alias, Cert: demopki.Must(ca.Issue(demopki.Options{CommonName: alias + "-at-ids"})), Key: true}
	}
	jks := filepath.Join(e.dir, "ids.jks")
	if err := demopki.WriteJKS(jks, "changeit", "changeit", entries...); err != nil {
		t.Fatal(err)
	}
	serverCA := filepath.Join(e.dir, "ids-server-ca.pem")
	writeFile(t, serverCA, string(backend.ServerCA.CertPEM()))

	// The identity comes from a request header here only to drive 1000 of
	// them from the test; a gateway takes it from the verified caller
	// ({http.auth.user.alias}), never from a header the caller sets.
	port := freePort(t)
	c := startCaddy(t, e, fmt.Sprintf(`{
	admin {admin}
	auto_https off
}
http://:%[1]d {
	bind 127.0.0.1
	reverse_proxy https://localhost:%[2]d {
		transport ssl_profiles {
			keepalive %[6]s
			max_pools %[5]d
			profile localhost:%[2]d {
				tls_trust_pool file %[3]s
				tls_client_keystore %[4]s password changeit alias {http.request.header.X-Identity}
			}
		}
	}
}`, port, backend.Port, serverCA, jks, maxPools, idle), "caddyfile", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("http://127.0.0.1:%d/", port)
	baseGoroutines, baseFDs := goroutines(t, c), openFDs(t, c.pid)

	// Sample while the load runs: the bound must hold throughout.
	var peakGoroutines, peakConns atomic.Int64 // written by the sampler, read after it ends
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if n, err := goroutineCount(c); err == nil && int64(n) > peakGoroutines.Load() {
				peakGoroutines.Store(int64(n))
			}
			if n := int64(backend.OpenConns()); n > peakConns.Load() {
				peakConns.Store(n)
			}
		}
	}()
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		wrong    atomic.Int64
		mu       sync.Mutex
		firstBad error
	)
	started := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			// Every identity twice, the second pass after the pools of the
			// first were evicted.
			for i := int(next.Add(1) - 1); i < 2*identities; i = int(next.Add(1) - 1) {
				alias := fmt.Sprintf("id-%04d", i%identities)
				if err := getAs(client, base, alias); err != nil {
					wrong.Add(1)
					mu.Lock()
					if firstBad == nil {
						firstBad = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	close(stop)
	<-sampled
	if wrong.Load() > 0 {
		t.Fatalf("%d of %d requests did not reach the backend with their own identity; first: %v", wrong.Load(), 2*identities, firstBad)
	}
	// Each pool holds its connections (HTTP/2 here: one reading goroutine
	// each, two for HTTP/1.1); in-flight requests may hold a connection of
	// a pool just evicted, and the backend counts a close only once its own
	// goroutine has seen it (slow under -race on a busy machine): slack of
	// half the bound. Without the bound, every identity's connection would
	// stay open for the keep-alive time (idle): 1000 when the load takes less.
	maxConns := int64(maxPools + maxPools/2)
	if peak := peakConns.Load(); peak > maxConns {
		t.Errorf("backend saw %d connections open at once, bound %d", peak, maxConns)
	}
	if peak := peakGoroutines.Load(); peak > int64(baseGoroutines)+2*maxConns+concurrency*4 {
		t.Errorf("gateway peaked at %d goroutines (baseline %d), bound %d", peak, baseGoroutines, int64(baseGoroutines)+2*maxConns+concurrency*4)
	}
	t.Logf("%d identities, %d requests in %s: peak %d gateway goroutines (baseline %d), peak %d backend connections (max_pools %d)",
		identities, 2*identities, elapsed.Round(time.Millisecond), peakGoroutines.Load(), baseGoroutines, peakConns.Load(), maxPools)

	// Idle: the connections close after the keepalive time, and with them
	// their goroutines and descriptors.
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(idle + 10*time.Second)
	for {
		g, fds, conns := goroutines(t, c), openFDs(t, c.pid), backend.OpenConns()
		if g <= baseGoroutines+4 && fds <= baseFDs+2 && conns == 0 {
			t.Logf("idle: %d goroutines, %d file descriptors, %d backend connections", g, fds, conns)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not back to baseline %s after the load: goroutines %d (baseline %d), file descriptors %d (baseline %d), backend connections %d",
				idle+10*time.Second, g, baseGoroutines, fds, baseFDs, conns)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getAs asks the gateway for the backend with identity alias, and checks
// that the backend saw that identity.
func getAs(client *http.Client, url, alias string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Identity", alias)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return err
	}
	if want := "ids " + alias + "-at-ids"; resp.StatusCode != http.StatusOK || string(body) != want {
		return fmt.Errorf("%s: %d %q, want %q", alias, resp.StatusCode, body, want)
	}
	return nil
}
