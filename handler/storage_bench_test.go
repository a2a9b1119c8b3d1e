package handler

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// BenchmarkStoredClients reads 20,000 stored clients from a file storage,
// as a gateway starting cold does, and reports the heap kept per client
// (B/client, with their certificates parsed on the way), the time of the
// full reading (ms/read), and the storage reads of an idle refresh
// (reads/refresh). Issue 19's targets: under 2 KB a client, at most 2
// reads when nothing changed; bench/cluster measures the same with Redis
// and 100,000 clients.
func BenchmarkStoredClients(b *testing.B) {
	const clients = 20000
	storage := &countingStorage{FileStorage: &certmagic.FileStorage{Path: b.TempDir()}}
	st := store.New(storage, zap.NewNop())
	ca := demopki.Must(demopki.NewCA("Bench CA"))
	var batch []store.NewClient
	for i := range clients {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprint("client-", i)}))
		batch = append(batch, store.NewClient{Alias: fmt.Sprintf("client-%06d", i), Tier: "gold", Certificate: string(c.CertPEM()), Groups: []string{"all"}})
		if len(batch) == store.MaxPutClients || i == clients-1 {
			if err := st.PutClients(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.ResetTimer()
	for b.Loop() {
		handoffs.Clear() // a cold start: nothing handed off
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		r := newClientsReader(context.Background(), storage, time.Hour, time.Hour, zap.NewNop())
		took := time.Since(start)
		handoffs.Clear()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n := len(r.current.Load().byAlias); n != clients {
			b.Fatalf("read %d clients", n)
		}
		reads := storage.loads.Load() + storage.lists.Load()
		if err := r.read(context.Background()); err != nil {
			b.Fatal(err)
		}
		idle := storage.loads.Load() + storage.lists.Load() - reads
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/clients, "B/client")
		b.ReportMetric(float64(took.Milliseconds()), "ms/read")
		b.ReportMetric(float64(idle), "reads/refresh")
		runtime.KeepAlive(r)
		_ = r.Destruct()
	}
}
