package handler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// countingStorage is a file storage that counts its listings (one a full
// reading of the stored clients) and loads.
type countingStorage struct {
	*certmagic.FileStorage
	lists, loads atomic.Int64
}

func (s *countingStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	s.lists.Add(1)
	return s.FileStorage.List(ctx, path, recursive)
}

func (s *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	s.loads.Add(1)
	return s.FileStorage.Load(ctx, key)
}

// TestStoredClientsShared: the handlers of a config that trust the stored
// clients at the same interval share one reading, which every one of them
// sees; another interval or another config (one loaded after it, with the
// same storage) gets its own; the last handler to go stops it, and a
// handler gone keeps judging its draining requests by the last reading.
func TestStoredClientsShared(t *testing.T) {
	p := newPKI(t)
	storage := &countingStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
	st := store.New(storage, zap.NewNop())
	ctx := context.Background()
	if _, err := st.PutClient(ctx, "stored-mallory", "silver", string(p.wrongCA.CertPEM())); err != nil {
		t.Fatal(err)
	}
	config1, end1 := context.WithCancel(ctx)
	defer end1()
	config2, end2 := context.WithCancel(ctx)
	defer end2()
	use := func(config context.Context, interval time.Duration) *Handler {
		t.Helper()
		h := provision(t, `{"clients":[{"alias":"partner","certificate_file":"`+p.pinnedPath+`"}]}`)
		if err := h.useStoredClients(config, storage, interval); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Cleanup() })
		return h
	}
	alias := func(h *Handler) string {
		res := serve(h, reqOpts{certs: []*demopki.Cert{p.wrongCA}})
		if res.status != 0 {
			return fmt.Sprint(res.status)
		}
		return res.vars["alias"]
	}
	readings := func() int64 { return storage.lists.Load() }

	storage.lists.Store(0) // PutClient lists too, for a certificate stored already
	a, b := use(config1, time.Hour), use(config1, time.Hour)
	if a.clients != b.clients || readings() != 1 {
		t.Fatalf("two handlers of one config and interval: shared %v, %d readings (want one)", a.clients == b.clients, readings())
	}
	if alias(a) != "stored-mallory" || alias(b) != "stored-mallory" {
		t.Fatalf("stored client: %q, %q", alias(a), alias(b))
	}
	// Another interval, or another config of the same storage, has a
	// reader of its own, which starts from the last reading of the storage
	// and reads only what changed since (nothing): no full reading.
	c := use(config1, time.Minute)
	if c.clients == a.clients || readings() != 1 || alias(c) != "stored-mallory" {
		t.Fatalf("another interval: shared %v, %d readings, %q", c.clients == a.clients, readings(), alias(c))
	}
	d := use(config2, time.Hour)
	if d.clients == a.clients || readings() != 1 || alias(d) != "stored-mallory" {
		t.Fatalf("another config of the same storage: shared %v, %d readings, %q", d.clients == a.clients, readings(), alias(d))
	}
	if e1, e2 := use(ctx, time.Hour), use(ctx, time.Hour); e1.clients == e2.clients {
		t.Fatal("a context without an end shared a reading")
	}

	// A change, read once (from the change log, without a full reading),
	// is in force for both, and their verdicts of the former reading are
	// not reused.
	if err := st.DeleteClient(ctx, "stored-mallory"); err != nil {
		t.Fatal(err)
	}
	before := readings()
	if err := a.clients.read(ctx); err != nil {
		t.Fatal(err)
	}
	if readings() != before || alias(a) != "403" || alias(b) != "403" {
		t.Fatalf("after the client was deleted and one reading: %d readings, %q, %q", readings()-before, alias(a), alias(b))
	}
	if alias(d) != "stored-mallory" {
		t.Fatalf("the other config's reader changed without reading: %q", alias(d))
	}

	key := clientsReaderKey(config1, time.Hour, DefaultStorageFullRefresh)
	shared := a.clients
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	_ = a.Cleanup() // a second Cleanup releases nothing more
	if refs, ok := clientsReaders.References(key); !ok || refs != 1 {
		t.Fatalf("after one of two handlers went: %d references, %v", refs, ok)
	}
	_ = b.Cleanup()
	if _, ok := clientsReaders.References(key); ok {
		t.Fatal("the reader outlived its last handler")
	}
	select {
	case <-shared.done:
	default:
		t.Fatal("the reader was not stopped")
	}
	if alias(b) != "403" {
		t.Fatalf("a handler gone, for a request still draining: %q", alias(b))
	}
	// Ending a config stops its readers too.
	end2()
	select {
	case <-d.clients.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the reader of an ended config goes on")
	}
}

// TestStoredClientGroups: two handlers of one config trusting two groups
// share one reading, and each accepts only the clients of its group (a
// client of both is accepted by both); a handler without groups accepts
// every stored client. A client rotating its certificate is accepted with
// either, under its alias, until the old one is removed.
func TestStoredClientGroups(t *testing.T) {
	p := newPKI(t)
	storage := &countingStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
	st := store.New(storage, zap.NewNop())
	ctx := context.Background()
	put := func(alias string, c *demopki.Cert, groups ...string) {
		t.Helper()
		if _, err := st.PutClient(ctx, alias, "t-"+alias, string(c.CertPEM()), groups...); err != nil {
			t.Fatal(err)
		}
	}
	put("in-a", p.wrongCA, "a")
	put("in-b", p.selfSigned, "b")
	put("in-both", p.valid, "a", "b")
	put("in-none", p.viaMid)

	config, end := context.WithCancel(ctx)
	defer end()
	use := func(groups ...string) *Handler {
		t.Helper()
		h := provision(t, `{"clients":[{"alias":"partner","certificate_file":"`+p.pinnedPath+`"}]}`)
		h.ClientsFromStorage = &StorageClients{Groups: groups}
		if err := h.useStoredClients(config, storage, time.Hour); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Cleanup() })
		return h
	}
	alias := func(h *Handler, c *demopki.Cert) string {
		res := serve(h, reqOpts{certs: []*demopki.Cert{c}})
		if res.status != 0 {
			return fmt.Sprint(res.status)
		}
		return res.vars["alias"] + "/" + res.vars["tier"]
	}
	storage.lists.Store(0)
	ha, hb, hall := use("a"), use("b"), use()
	if ha.clients != hb.clients || ha.clients != hall.clients || storage.lists.Load() != 1 {
		t.Fatalf("handlers of two groups: shared %v, %d readings", ha.clients == hb.clients, storage.lists.Load())
	}
	want := []struct {
		h    *Handler
		c    *demopki.Cert
		want string
	}{
		{ha, p.wrongCA, "in-a/t-in-a"}, {ha, p.selfSigned, "403"}, {ha, p.valid, "in-both/t-in-both"}, {ha, p.viaMid, "403"},
		{hb, p.wrongCA, "403"}, {hb, p.selfSigned, "in-b/t-in-b"}, {hb, p.valid, "in-both/t-in-both"}, {hb, p.viaMid, "403"},
		{hall, p.wrongCA, "in-a/t-in-a"}, {hall, p.selfSigned, "in-b/t-in-b"}, {hall, p.viaMid, "in-none/t-in-none"},
	}
	for i, w := range want {
		if got := alias(w.h, w.c); got != w.want {
			t.Errorf("case %d (%s): %s, want %s", i, w.c.Cert.Subject.CommonName, got, w.want)
		}
	}

	// Moving a client to the other group and rotating one's certificate
	// are in force after one reading.
	put("in-a", p.wrongCA, "b")
	rotated := demopki.Must(p.other.Issue(demopki.Options{CommonName: "in-b, renewed"}))
	if _, err := st.AddClientCertificate(ctx, "in-b", string(rotated.CertPEM())); err != nil {
		t.Fatal(err)
	}
	if err := ha.clients.read(ctx); err != nil {
		t.Fatal(err)
	}
	if got := alias(ha, p.wrongCA); got != "403" {
		t.Errorf("moved out of a: %s", got)
	}
	if got := alias(hb, p.wrongCA); got != "in-a/t-in-a" {
		t.Errorf("moved into b: %s", got)
	}
	if a, b := alias(hb, p.selfSigned), alias(hb, rotated); a != "in-b/t-in-b" || b != "in-b/t-in-b" {
		t.Errorf("rotating: old %s, new %s", a, b)
	}
	if got := alias(ha, rotated); got != "403" {
		t.Errorf("rotated certificate of group b in a: %s", got)
	}
	if _, err := st.RemoveClientCertificate(ctx, "in-b", certcodec.Fingerprint(p.selfSigned.Cert.Raw)); err != nil {
		t.Fatal(err)
	}
	if err := ha.clients.read(ctx); err != nil {
		t.Fatal(err)
	}
	if a, b := alias(hb, p.selfSigned), alias(hb, rotated); a != "403" || b != "in-b/t-in-b" {
		t.Errorf("rotated: old %s, new %s", a, b)
	}
}

// TestPinnedRotation: an alias pinned twice, with two certificates,
// accepts both as the one client, with the first one's tier.
func TestPinnedRotation(t *testing.T) {
	p := newPKI(t)
	renewed := demopki.Must(demopki.SelfSigned(demopki.Options{CommonName: "partner, renewed"}))
	renewedPath, _, err := renewed.WriteFiles(p.dir, "renewed")
	if err != nil {
		t.Fatal(err)
	}
	h := provision(t, `{"clients":[{"alias":"partner","tier":"gold","certificate_file":"`+p.pinnedPath+`"},
		{"alias":"partner","certificate_file":"`+renewedPath+`"}]}`)
	for _, c := range []*demopki.Cert{p.pinned, renewed} {
		res := serve(h, reqOpts{certs: []*demopki.Cert{c}})
		if res.status != 0 || res.vars["alias"] != "partner" || res.vars["tier"] != "gold" {
			t.Fatalf("%s: %d %v", c.Cert.Subject, res.status, res.vars)
		}
	}
}

// TestStoredClientsFollowLog: a reader that follows the change log ends up
// with what a full reading gives, whatever the changes (put, regroup,
// rotate, delete, in random order), and reads only what changed.
func TestStoredClientsFollowLog(t *testing.T) {
	storage := &countingStorage{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
	st := store.New(storage, zap.NewNop())
	ctx, end := context.WithCancel(context.Background())
	defer end()
	ca := demopki.Must(demopki.NewCA("Follow CA"))
	var certs []*demopki.Cert
	for i := range 40 {
		certs = append(certs, demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprint("c", i)})))
	}
	follower := newClientsReader(ctx, storage, time.Hour, time.Hour, zap.NewNop())
	defer follower.Destruct()
	rng := rand.New(rand.NewPCG(1, 2))
	groups := []string{"a", "b", "c"}
	for round := range 20 {
		for range 5 {
			alias := fmt.Sprint("alias", rng.IntN(12))
			cert := certs[rng.IntN(len(certs))]
			var err error
			switch rng.IntN(4) {
			case 0, 1:
				_, err = st.PutClient(ctx, alias, fmt.Sprint("tier", rng.IntN(3)), string(cert.CertPEM()), groups[rng.IntN(3)], groups[rng.IntN(3)])
			case 2:
				_, err = st.AddClientCertificate(ctx, alias, string(cert.CertPEM()))
			case 3:
				err = st.DeleteClient(ctx, alias)
			}
			if err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
		}
		lists := storage.lists.Load()
		if err := follower.read(ctx); err != nil {
			t.Fatal(err)
		}
		if storage.lists.Load() != lists {
			t.Fatalf("round %d: following the log listed the clients", round)
		}
		handoffs.Delete(storageKey(storage.FileStorage)) // a reading of its own
		full := newClientsReader(context.Background(), storage.FileStorage, time.Hour, time.Hour, zap.NewNop())
		_ = full.Destruct()
		if got, want := describe(follower.current.Load()), describe(full.current.Load()); got != want {
			t.Fatalf("round %d: following the log:\n%s\nreading in full:\n%s", round, got, want)
		}
	}
}

// describe writes out what a reading trusts, for comparing two.
func describe(sc *storedClients) string {
	var lines []string
	for fp, c := range sc.byFingerprint {
		lines = append(lines, fmt.Sprintf("%x %s %s", fp[:4], c.Alias, c.Tier))
	}
	for g, m := range sc.byGroup {
		for fp, c := range m {
			lines = append(lines, fmt.Sprintf("group %s %x %s", g, fp[:4], c.Alias))
		}
	}
	for alias, c := range sc.byAlias {
		lines = append(lines, fmt.Sprintf("alias %s %v %d %s", alias, c.groups, len(c.fps), c.notAfter))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// hideKey is a storage that answers "not found" for one key, as a storage
// that hides a failed read does.
type hideKey struct {
	*certmagic.FileStorage
	key atomic.Value // string
}

func (h *hideKey) Load(ctx context.Context, key string) ([]byte, error) {
	if k, _ := h.key.Load().(string); k == key {
		return nil, fs.ErrNotExist
	}
	return h.FileStorage.Load(ctx, key)
}

// TestStoredClientsKeptWhenUnreadable: a stored client that a full reading
// lists but cannot read (answered "not found", or corrupt) keeps its last
// good version; one deleted is gone after the next refresh.
func TestStoredClientsKeptWhenUnreadable(t *testing.T) {
	p := newPKI(t)
	storage := &hideKey{FileStorage: &certmagic.FileStorage{Path: t.TempDir()}}
	st := store.New(storage, zap.NewNop())
	ctx := context.Background()
	for alias, c := range map[string]*demopki.Cert{"a": p.wrongCA, "b": p.selfSigned} {
		if _, err := st.PutClient(ctx, alias, "", string(c.CertPEM())); err != nil {
			t.Fatal(err)
		}
	}
	h := provision(t, `{"clients":[{"alias":"partner","certificate_file":"`+p.pinnedPath+`"}]}`)
	h.ClientsFromStorage = &StorageClients{FullRefresh: caddy.Duration(time.Nanosecond)} // every read a full one
	if err := h.useStoredClients(ctx, storage, time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	alias := func(c *demopki.Cert) string {
		res := serve(h, reqOpts{certs: []*demopki.Cert{c}})
		if res.status != 0 {
			return fmt.Sprint(res.status)
		}
		return res.vars["alias"]
	}
	storage.key.Store("caddy_mtls/clients/a.json")
	if err := h.clients.read(ctx); err != nil {
		t.Fatal(err)
	}
	if got := alias(p.wrongCA); got != "a" {
		t.Fatalf("a client listed but unreadable: %s", got)
	}
	storage.key.Store("")
	if err := st.DeleteClient(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := h.clients.read(ctx); err != nil {
		t.Fatal(err)
	}
	if got, gone := alias(p.wrongCA), alias(p.selfSigned); got != "a" || gone != "403" {
		t.Fatalf("after a deletion: a %s, b %s", got, gone)
	}
}

// sameName is a file storage that names itself like any other of its type,
// as storage modules may (caddy-storage-redis hides its password, some S3
// modules their endpoint).
type sameName struct{ *certmagic.FileStorage }

func (sameName) String() string { return "same-name storage" }

// TestHandoffOtherStorage: a config whose storage merely has the same name
// as the last one read does not trust that one's clients: the reading
// handed off is used only when its storage's change log follows on from
// it, else the new config reads its own (none trusted until it can).
func TestHandoffOtherStorage(t *testing.T) {
	p := newPKI(t)
	ctx := context.Background()
	first := sameName{&certmagic.FileStorage{Path: t.TempDir()}}
	if _, err := store.New(first, zap.NewNop()).PutClient(ctx, "theirs", "", string(p.wrongCA.CertPEM())); err != nil {
		t.Fatal(err)
	}
	use := func(storage certmagic.Storage) *Handler { return useStorageConfig(t, p, storage) }
	accepted := func(h *Handler) bool { return serve(h, reqOpts{certs: []*demopki.Cert{p.wrongCA}}).status == 0 }
	if !accepted(use(first)) {
		t.Fatal("the first storage's client refused")
	}
	// Another storage of the same name, empty: no change log.
	if accepted(use(sameName{&certmagic.FileStorage{Path: t.TempDir()}})) {
		t.Fatal("an empty storage of the same name trusted the other's client")
	}
	// Another, with a change log of its own.
	other := sameName{&certmagic.FileStorage{Path: t.TempDir()}}
	if _, err := store.New(other, zap.NewNop()).PutClient(ctx, "mine", "", string(p.selfSigned.CertPEM())); err != nil {
		t.Fatal(err)
	}
	h := use(other)
	if accepted(h) || serve(h, reqOpts{certs: []*demopki.Cert{p.selfSigned}}).status != 0 {
		t.Fatal("a storage of the same name with a log of its own: the other's clients trusted, or its own not")
	}
}

// TestNoHandoffWithoutLog: a reading of a storage without a change log
// (written by an older version) is not handed off: another storage of the
// same name could not be told from it.
func TestNoHandoffWithoutLog(t *testing.T) {
	p := newPKI(t)
	ctx := context.Background()
	old := sameName{&certmagic.FileStorage{Path: t.TempDir()}}
	if err := old.Store(ctx, "caddy_mtls/clients/theirs.json", []byte(fmt.Sprintf(`{"alias":"theirs","certificate":%q}`, p.wrongCA.CertPEM()))); err != nil {
		t.Fatal(err)
	}
	use := func(storage certmagic.Storage) *Handler { return useStorageConfig(t, p, storage) }
	if serve(use(old), reqOpts{certs: []*demopki.Cert{p.wrongCA}}).status != 0 {
		t.Fatal("a client written by an older version refused")
	}
	if serve(use(sameName{&certmagic.FileStorage{Path: t.TempDir()}}), reqOpts{certs: []*demopki.Cert{p.wrongCA}}).status == 0 {
		t.Fatal("an empty storage of the same name trusted the older storage's client")
	}
}

// useStorageConfig provisions a handler trusting the clients of storage,
// in a config of its own that ends with the test.
func useStorageConfig(t *testing.T, p *pki, storage certmagic.Storage) *Handler {
	t.Helper()
	config, end := context.WithCancel(context.Background())
	t.Cleanup(end)
	h := provision(t, `{"clients":[{"alias":"partner","certificate_file":"`+p.pinnedPath+`"}]}`)
	h.ClientsFromStorage = &StorageClients{}
	if err := h.useStoredClients(config, storage, time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Cleanup() })
	return h
}
