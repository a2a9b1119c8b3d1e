package handler

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/testpki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// countingStorage is a file storage that counts its listings: one a
// reading of the stored clients.
type countingStorage struct {
	*certmagic.FileStorage
	lists atomic.Int64
}

func (s *countingStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	s.lists.Add(1)
	return s.FileStorage.List(ctx, path, recursive)
}

// valueStorage is a storage that is not a pointer, so that two of them
// cannot be told apart.
type valueStorage struct{ *countingStorage }

// TestStoredClientsShared: the handlers of a config that trust the stored
// clients at the same interval share one reading, which every one of them
// sees; another interval or a storage that cannot be told apart gets its
// own; the last handler to go stops it.
func TestStoredClientsShared(t *testing.T) {
	p := newPKI(t)
	storage := &countingStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
	st := store.New(storage, zap.NewNop())
	ctx := context.Background()
	if _, err := st.PutClient(ctx, "stored-mallory", "silver", string(p.wrongCA.CertPEM())); err != nil {
		t.Fatal(err)
	}
	use := func(s certmagic.Storage, interval time.Duration) *Handler {
		t.Helper()
		h := provision(t, `{"clients":[{"alias":"partner","certificate_file":"`+p.pinnedPath+`"}]}`)
		if err := h.useStoredClients(s, interval); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Cleanup() })
		return h
	}
	alias := func(h *Handler) string {
		res := serve(h, reqOpts{certs: []*testpki.Cert{p.wrongCA}})
		if res.status != 0 {
			return fmt.Sprint(res.status)
		}
		return res.vars["alias"]
	}

	storage.lists.Store(0) // PutClient lists too, for a certificate stored already
	a, b := use(storage, time.Hour), use(storage, time.Hour)
	if a.clients != b.clients || storage.lists.Load() != 1 {
		t.Fatalf("two handlers of one storage and interval: shared %v, %d readings (want one)", a.clients == b.clients, storage.lists.Load())
	}
	if alias(a) != "stored-mallory" || alias(b) != "stored-mallory" {
		t.Fatalf("stored client: %q, %q", alias(a), alias(b))
	}
	c := use(storage, time.Minute)
	if c.clients == a.clients || storage.lists.Load() != 2 {
		t.Fatalf("another interval: shared %v, %d readings", c.clients == a.clients, storage.lists.Load())
	}
	v1, v2 := use(valueStorage{storage}, time.Hour), use(valueStorage{storage}, time.Hour)
	if v1.clients == v2.clients || v1.clients == a.clients {
		t.Fatal("a storage that is not a pointer shared a reading")
	}

	// A change, read once, is in force for both, and their verdicts of the
	// former reading are not reused.
	if err := st.DeleteClient(ctx, "stored-mallory"); err != nil {
		t.Fatal(err)
	}
	before := storage.lists.Load()
	if err := a.clients.read(ctx); err != nil {
		t.Fatal(err)
	}
	if storage.lists.Load() != before+1 || alias(a) != "403" || alias(b) != "403" {
		t.Fatalf("after the client was deleted and one reading: %d readings, %q, %q", storage.lists.Load()-before, alias(a), alias(b))
	}

	key := clientsReaderKey(storage, time.Hour)
	shared := a.clients
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if refs, ok := clientsReaders.References(key); !ok || refs != 1 {
		t.Fatalf("after one of two handlers went: %d references, %v", refs, ok)
	}
	_ = b.Cleanup()
	if _, ok := clientsReaders.References(key); ok {
		t.Fatal("the reader outlived its last handler")
	}
	if len(shared.users) != 0 {
		t.Fatalf("%d users left on a stopped reader", len(shared.users))
	}
}
