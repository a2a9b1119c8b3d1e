package handler

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// batch is how many requests are prepared, untimed, at a time. Each request
// is fresh (its own replacer and headers, as a server makes them), so what
// is timed and counted is the handler's own work.
const batch = 1024

type benchCase struct {
	name   string
	certs  []*demopki.Cert // TLS peer chain
	header string          // Client-Cert value, sent by a trusted proxy
}

func benchHandler(b *testing.B, h *Handler, cases func(i int) benchCase) {
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	w := httptest.NewRecorder()
	reqs := make([]*http.Request, batch)
	prepare := func(start int) {
		for j := range reqs {
			c := cases(start + j)
			r := httptest.NewRequest(http.MethodGet, "https://api.example/v1", nil)
			if len(c.certs) > 0 {
				r.TLS = &tls.ConnectionState{}
				for _, cert := range c.certs {
					r.TLS.PeerCertificates = append(r.TLS.PeerCertificates, cert.Cert)
				}
			}
			if c.header != "" {
				r.Header.Set("Client-Cert", c.header)
			}
			r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
			// Header requests come from a trusted proxy; TLS ones do not.
			caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, c.header != "")
			reqs[j] = r
		}
	}
	b.ReportAllocs()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		if i%batch == 0 {
			b.StopTimer()
			prepare(i)
			b.StartTimer()
		}
		if err := h.ServeHTTP(w, reqs[i%batch], next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServeHTTP measures one request through client_cert_auth: the TLS
// path and each header format, with the verdict cached (hit) and not (miss:
// two callers alternate through a cache of one).
func BenchmarkServeHTTP(b *testing.B) {
	p := newPKI(b)
	second, err := p.root.Issue(demopki.Options{CommonName: "carol"})
	if err != nil {
		b.Fatal(err)
	}
	callers := []*demopki.Cert{p.valid, second}
	// The test PKI lives a day: a window of 1 ns keeps the expiry warnings
	// (with their stack traces) out of the benchmark's output.
	cfg := strings.TrimSuffix(headerConfig(p, `{}`, `{}`), "}") + `, "expiry_warning": 1}`

	run := func(b *testing.B, miss bool, mk func(c *demopki.Cert) benchCase) {
		h := provision(b, cfg)
		if miss {
			h.cache = certcheck.NewCache[*verdict](1)
		}
		benchHandler(b, h, func(i int) benchCase {
			if miss {
				return mk(callers[i%2])
			}
			return mk(callers[0])
		})
	}
	for _, miss := range []bool{false, true} {
		kind := "hit"
		if miss {
			kind = "miss"
		}
		b.Run("tls/"+kind, func(b *testing.B) {
			run(b, miss, func(c *demopki.Cert) benchCase { return benchCase{certs: []*demopki.Cert{c}} })
		})
		for _, f := range []certcodec.Format{certcodec.RFC9440, certcodec.URLPEM, certcodec.PEM, certcodec.Base64DER} {
			encoded := map[*demopki.Cert]string{}
			for _, c := range callers {
				encoded[c] = certcodec.Encode(c.Cert.Raw, f)
			}
			b.Run("header_"+f.String()+"/"+kind, func(b *testing.B) {
				run(b, miss, func(c *demopki.Cert) benchCase { return benchCase{header: encoded[c]} })
			})
		}
	}
}

// BenchmarkCacheEntry reports the Go heap one accepted caller's verdict
// takes in the cache (B/entry, live heap after a GC): callers issued by the
// root, and callers under an intermediate that they send along (the
// intermediate's DER is kept with the verdict, to compare).
func BenchmarkCacheEntry(b *testing.B) {
	p := newPKI(b)
	const n = 500
	for _, tc := range []struct {
		name   string
		issuer *demopki.Cert
		chain  []*x509.Certificate
	}{
		{"root_issued", p.root, nil},
		{"with_intermediate", p.mid, []*x509.Certificate{p.mid.Cert}},
	} {
		chains := make([][]*x509.Certificate, n)
		for i := range chains {
			leaf, err := tc.issuer.Issue(demopki.Options{CommonName: fmt.Sprintf("caller-%d", i)})
			if err != nil {
				b.Fatal(err)
			}
			chains[i] = append([]*x509.Certificate{leaf.Cert}, tc.chain...)
		}
		b.Run(tc.name, func(b *testing.B) {
			var grown uint64
			var ms runtime.MemStats
			for b.Loop() {
				h := provision(b, `{"trust_pool":{"provider":"file","pem_files":["`+p.rootPath+`"]},"cache_size":`+strconv.Itoa(n)+`,"expiry_warning":1}`)
				runtime.GC()
				runtime.ReadMemStats(&ms)
				before := ms.HeapAlloc
				now := time.Now()
				for _, c := range chains {
					if v := h.fromTLS(c, now); !v.accepted {
						b.Fatalf("%s: refused: %s", c[0].Subject.CommonName, v.reason)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&ms)
				grown += ms.HeapAlloc - before
				runtime.KeepAlive(h)
			}
			b.ReportMetric(float64(grown)/float64(b.N*n), "B/entry")
		})
	}
}
