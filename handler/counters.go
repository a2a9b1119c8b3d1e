package handler

import (
	"context"
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/metrics"
)

// DefaultName is the name of a handler without `name` in its metrics: the
// first unnamed handler of a server has it, the next ones it numbered
// (client_cert_auth_2, client_cert_auth_3, ...) in the order the server
// provisions them.
const DefaultName = "client_cert_auth"

// unknownServer is the server label outside an HTTP server, as Caddy's own
// metrics write it.
const unknownServer = "UNKNOWN"

// requestCounters are one handler's request counters, made at provision,
// so that counting a request costs no lookup: accepted by source, rejected
// by reason and source.
type requestCounters struct {
	server, handler string
	accepted        [certcheck.NumSources]prometheus.Counter
	rejected        [certcheck.NumReasons][certcheck.NumSources]prometheus.Counter
}

// newRequestCounters makes the counters of the handler named handler of
// server, for the sources it reads certificates from: their series show,
// at 0, before the first request, so that an alert on their increase sees
// the first one.
func newRequestCounters(server, handler string, sources []certcheck.Source) *requestCounters {
	rc := &requestCounters{server: server, handler: handler}
	for _, src := range sources {
		rc.accepted[src] = metrics.RequestCounter(server, handler, "accepted", "", src.String())
		for _, reason := range certcheck.Reasons() {
			rc.rejected[reason][src] = metrics.RequestCounter(server, handler, "rejected", reason.String(), src.String())
		}
	}
	return rc
}

// accept counts an accepted request.
func (rc *requestCounters) accept(src certcheck.Source) {
	c := rc.accepted[src]
	if c == nil { // a source the handler was not made for
		c = metrics.RequestCounter(rc.server, rc.handler, "accepted", "", src.String())
	}
	c.Inc()
}

// reject counts a refused request.
func (rc *requestCounters) reject(reason certcheck.Reason, src certcheck.Source) {
	var c prometheus.Counter
	if reason < certcheck.NumReasons {
		c = rc.rejected[reason][src]
	}
	if c == nil {
		c = metrics.RequestCounter(rc.server, rc.handler, "rejected", reason.String(), src.String())
	}
	c.Inc()
}

// provisionMetrics names the handler and its server for the metrics, makes
// its request counters and counts its verification cache.
func (h *Handler) provisionMetrics(ctx caddy.Context) error {
	h.server = unknownServer
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv != nil && srv.Name() != "" {
		h.server = srv.Name()
	}
	h.name = h.Name
	if h.name == "" {
		h.name = DefaultName
		if n := unnamedHandlers.next(ctx, srv); n > 1 {
			h.name = fmt.Sprintf("%s_%d", DefaultName, n)
			if n == 2 {
				h.logger.Warn("several client_cert_auth handlers of this server have no name: their metrics are labelled "+
					DefaultName+", "+DefaultName+"_2, ... in the order of the server's routes; give each a name",
					zap.String("server", h.server))
			}
		}
	}
	sources := []certcheck.Source{certcheck.SourceTLS}
	if h.headerField != "" {
		sources = append(sources, certcheck.SourceHeader)
	}
	h.counters = newRequestCounters(h.server, h.name, sources)
	size := h.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	hits, misses := metrics.VerifyCache(h, h.server, h.name, h.cache.Size, size)
	h.cache.CountWith(hits, misses)
	return nil
}

// unnamedHandlers numbers the unnamed handlers of each server, per config:
// the entry of a server goes when its config is unloaded.
var unnamedHandlers = &handlerCount{m: map[*caddyhttp.Server]int{}}

type handlerCount struct {
	mu sync.Mutex
	m  map[*caddyhttp.Server]int
}

// next returns the number of the unnamed handler of srv being provisioned
// with ctx: 1, 2, ...; always 1 outside a server.
func (hc *handlerCount) next(ctx context.Context, srv *caddyhttp.Server) int {
	if srv == nil {
		return 1
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	n, seen := hc.m[srv]
	if !seen {
		context.AfterFunc(ctx, func() {
			hc.mu.Lock()
			delete(hc.m, srv)
			hc.mu.Unlock()
		})
	}
	n++
	hc.m[srv] = n
	return n
}
