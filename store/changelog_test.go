package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

// countingStorage counts the reads made of a storage, and fails them all
// while down is set.
type countingStorage struct {
	certmagic.Storage
	loads, lists atomic.Int64
	down         atomic.Bool
}

var errDown = errors.New("storage down")

func (c *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	c.loads.Add(1)
	if c.down.Load() {
		return nil, errDown
	}
	return c.Storage.Load(ctx, key)
}

func (c *countingStorage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	c.lists.Add(1)
	if c.down.Load() {
		return nil, errDown
	}
	return c.Storage.List(ctx, dir, recursive)
}

func (c *countingStorage) reads() int64 { return c.loads.Load() + c.lists.Load() }

// syncNames syncs f and returns the names read (sorted, "-" before a
// deleted one) and whether they were all of them.
func syncNames(t *testing.T, f *Follower, all bool) (names []string, full bool) {
	t.Helper()
	full, _, err := f.Sync(context.Background(), all, func(name string, data []byte) {
		if data == nil {
			name = "-" + name
		}
		names = append(names, name)
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names, full
}

func newCountingStore(t *testing.T) (*Store, *countingStorage) {
	t.Helper()
	s, fs, _ := newStore(t)
	cs := &countingStorage{Storage: fs}
	s.storage = cs
	return s, cs
}

func TestFollowerReadsWhatChanged(t *testing.T) {
	s, cs := newCountingStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Log CA"))
	certs := map[string]*demopki.Cert{}
	for i := range 30 {
		alias := fmt.Sprintf("c%02d", i)
		certs[alias] = demopki.Must(ca.Issue(demopki.Options{CommonName: alias}))
		if _, err := s.PutClient(ctx, alias, "", string(certs[alias].CertPEM())); err != nil {
			t.Fatal(err)
		}
	}
	f := s.ClientsFollower(0)
	names, full := syncNames(t, f, false)
	if !full || len(names) != 30 {
		t.Fatalf("first sync: full %v, %d names", full, len(names))
	}

	// Nothing changed: one read, of the revision.
	before := cs.reads()
	for range 5 {
		if names, _ := syncNames(t, f, false); len(names) != 0 {
			t.Fatalf("idle sync read %v", names)
		}
	}
	if got := cs.reads() - before; got != 5 {
		t.Fatalf("5 idle syncs made %d storage reads, want 5", got)
	}

	// Every kind of change is read, and only it: the revision, the log
	// and each changed entry.
	newer := demopki.Must(ca.Issue(demopki.Options{CommonName: "c01 new"}))
	if _, err := s.PutClient(ctx, "c00", "gold", string(certs["c00"].CertPEM())); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddClientCertificate(ctx, "c01", string(newer.CertPEM())); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteClient(ctx, "c02"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutClient(ctx, "c03", "", string(certs["c03"].CertPEM()), "payments"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutClient(ctx, "new", "", string(demopki.Must(ca.Issue(demopki.Options{CommonName: "new"})).CertPEM())); err != nil {
		t.Fatal(err)
	}
	// Nothing changes: not recorded.
	if _, err := s.AddClientCertificate(ctx, "c01", string(newer.CertPEM())); err != nil {
		t.Fatal(err)
	}
	before = cs.reads()
	names, full = syncNames(t, f, false)
	if want := []string{"-c02", "c00", "c01", "c03", "new"}; full || !slices.Equal(names, want) {
		t.Fatalf("sync read %v (full %v), want %v", names, full, want)
	}
	// The revision, the log, the 5 entries, and the revision again (to
	// tell a storage that hid a failed read as "not found").
	if got := cs.reads() - before; got != 3+5 {
		t.Fatalf("sync of 5 changes made %d storage reads, want 8", got)
	}
	if _, err := s.RemoveClientCertificate(ctx, "c01", fingerprintOf(certs["c01"])); err != nil {
		t.Fatal(err)
	}
	if names, _ := syncNames(t, f, false); !slices.Equal(names, []string{"c01"}) {
		t.Fatalf("sync read %v", names)
	}

	// Key pairs have their own log.
	kf := s.KeyPairsFollower(0)
	if names, full := syncNames(t, kf, false); !full || len(names) != 0 {
		t.Fatalf("key pairs: %v %v", names, full)
	}
	if _, err := s.GenerateKeyPair(ctx, "gw", GenerateRequest{CommonName: "gw"}, false); err != nil {
		t.Fatal(err)
	}
	// The first write starts the log, at its first revision: followed.
	if names, full := syncNames(t, kf, false); full || !slices.Equal(names, []string{"gw"}) {
		t.Fatalf("key pairs: %v %v", names, full)
	}
	if err := s.DeleteKeyPair(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	if names, _ := syncNames(t, kf, false); !slices.Equal(names, []string{"-gw"}) {
		t.Fatalf("key pairs: %v", names)
	}
	if names, _ := syncNames(t, f, false); len(names) != 0 {
		t.Fatalf("clients read after key pair changes: %v", names)
	}
}

func fingerprintOf(c *demopki.Cert) string {
	return holderKey(c.Cert)[len(holdersDir)+1 : len(holderKey(c.Cert))-len(".json")]
}

func TestFollowerFallsBackToFullRead(t *testing.T) {
	s, cs := newCountingStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Log CA"))
	alice := demopki.Must(ca.Issue(demopki.Options{CommonName: "alice"}))
	if _, err := s.PutClient(ctx, "alice", "", string(alice.CertPEM())); err != nil {
		t.Fatal(err)
	}
	f := s.ClientsFollower(0)
	syncNames(t, f, false)

	// Further behind than the log keeps.
	for i := range logLength + 1 {
		if _, err := s.PutClient(ctx, "alice", fmt.Sprint(i), string(alice.CertPEM())); err != nil {
			t.Fatal(err)
		}
	}
	if names, full := syncNames(t, f, false); !full || !slices.Equal(names, []string{"alice"}) {
		t.Fatalf("behind by more than the log: %v (full %v)", names, full)
	}

	// The log lost: a new epoch, so everything is read again.
	for _, key := range []string{logKey(clientsDir), revisionKey(clientsDir)} {
		if err := cs.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutClient(ctx, "bob", "", string(demopki.Must(ca.Issue(demopki.Options{CommonName: "bob"})).CertPEM())); err != nil {
		t.Fatal(err)
	}
	if names, full := syncNames(t, f, false); !full || !slices.Equal(names, []string{"alice", "bob"}) {
		t.Fatalf("new epoch: %v (full %v)", names, full)
	}

	// A write whose log entry was lost (cut short between entry and log)
	// is not seen by following the log, and is by the full read.
	carol := demopki.Must(ca.Issue(demopki.Options{CommonName: "carol"}))
	if err := cs.Store(ctx, clientKey("carol"), []byte(fmt.Sprintf(`{"alias":"carol","certificate":%q}`, carol.CertPEM()))); err != nil {
		t.Fatal(err)
	}
	if names, _ := syncNames(t, f, false); len(names) != 0 {
		t.Fatalf("lost log entry read: %v", names)
	}
	if names, full := syncNames(t, f, true); !full || !slices.Equal(names, []string{"alice", "bob", "carol"}) {
		t.Fatalf("repair: %v (full %v)", names, full)
	}

	// A failed sync reads from the same point the next time.
	if err := s.DeleteClient(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	cs.down.Store(true)
	if _, _, err := f.Sync(ctx, false, func(string, []byte) {}); !errors.Is(err, errDown) {
		t.Fatalf("sync with the storage down: %v", err)
	}
	cs.down.Store(false)
	if names, full := syncNames(t, f, false); full || !slices.Equal(names, []string{"-bob"}) {
		t.Fatalf("after the storage came back: %v (full %v)", names, full)
	}
}

// TestOlderEntries: clients written by a version without the change log
// and the certificate index are read, and the first write indexes them,
// so that a certificate of theirs is not stored again under another alias.
func TestOlderEntries(t *testing.T) {
	s, cs := newCountingStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Old CA"))
	alice := demopki.Must(ca.Issue(demopki.Options{CommonName: "alice"}))
	if err := cs.Store(ctx, clientKey("alice"), []byte(fmt.Sprintf(`{"alias":"alice","tier":"gold","certificate":%q}`, alice.CertPEM()))); err != nil {
		t.Fatal(err)
	}
	f := s.ClientsFollower(0)
	if names, full := syncNames(t, f, false); !full || !slices.Equal(names, []string{"alice"}) {
		t.Fatalf("older entries: %v (full %v)", names, full)
	}
	// No log yet: nothing to follow until the first write.
	if names, _ := syncNames(t, f, false); len(names) != 0 {
		t.Fatalf("%v", names)
	}
	_, err := s.PutClient(ctx, "mallory", "", string(alice.CertPEM()))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("alice's certificate stored again as mallory: %v", err)
	}
	if err := s.DeleteClient(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if names, full := syncNames(t, f, false); full || !slices.Equal(names, []string{"-alice"}) {
		t.Fatalf("%v (full %v)", names, full)
	}
	// Deleted, its certificate is free for another alias.
	if _, err := s.PutClient(ctx, "alice2", "", string(alice.CertPEM())); err != nil {
		t.Fatal(err)
	}
}

// TestPutClients: many clients stored in one change, all checked before
// any is written; a follower reads them in one sync.
func TestPutClients(t *testing.T) {
	s, cs := newCountingStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Bulk CA"))
	taken := demopki.Must(ca.Issue(demopki.Options{CommonName: "taken"}))
	if _, err := s.PutClient(ctx, "owner", "", string(taken.CertPEM())); err != nil {
		t.Fatal(err)
	}
	f := s.ClientsFollower(0)
	syncNames(t, f, false)
	var batch []NewClient
	for i := range 50 {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprint("bulk", i)}))
		batch = append(batch, NewClient{Alias: fmt.Sprintf("bulk%02d", i), Tier: "t", Certificate: string(c.CertPEM()), Groups: []string{"g"}})
	}
	bad := []struct {
		name string
		edit func([]NewClient) []NewClient
		want error
	}{
		{"alias twice", func(b []NewClient) []NewClient { b[3].Alias = b[2].Alias; return b }, nil},
		{"certificate twice", func(b []NewClient) []NewClient { b[3].Certificate = b[2].Certificate; return b }, nil},
		{"bad name", func(b []NewClient) []NewClient { b[40].Alias = "../x"; return b }, nil},
		{"not a certificate", func(b []NewClient) []NewClient { b[49].Certificate = "nope"; return b }, nil},
		{"another's certificate", func(b []NewClient) []NewClient { b[49].Certificate = string(taken.CertPEM()); return b }, ErrConflict},
		{"none", func([]NewClient) []NewClient { return nil }, nil},
	}
	for _, tc := range bad {
		err := s.PutClients(ctx, tc.edit(slices.Clone(batch)))
		var input *InputError
		if tc.want != nil && !errors.Is(err, tc.want) || tc.want == nil && !errors.As(err, &input) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if names, _ := syncNames(t, f, false); len(names) != 0 {
			t.Fatalf("%s: a refused batch wrote %v", tc.name, names)
		}
	}
	before := cs.reads()
	if err := s.PutClients(ctx, batch); err != nil {
		t.Fatal(err)
	}
	t.Logf("storing 50 clients at once: %d storage reads", cs.reads()-before)
	names, full := syncNames(t, f, false)
	if full || len(names) != 50 {
		t.Fatalf("after storing 50: %d names, full %v", len(names), full)
	}
	clients, err := s.Clients(ctx)
	if err != nil || len(clients) != 51 || !clients[1].InGroup("g") || clients[1].Tier != "t" {
		t.Fatalf("%d clients %v", len(clients), err)
	}
	// A second import replaces, and is refused for another's certificate.
	batch[0].Tier = "u"
	if err := s.PutClients(ctx, batch[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutClient(ctx, "thief", "", batch[1].Certificate); !errors.Is(err, ErrConflict) {
		t.Fatalf("a certificate of the batch stored again: %v", err)
	}
}

// hidingStorage answers every Load with fs.ErrNotExist while hide is set,
// as caddy-storage-redis v1.8.0 answers a GET that failed (connection
// refused, or Redis still loading its data after a restart), and fails
// List while down is set.
type hidingStorage struct {
	*countingStorage
	hide atomic.Int64 // Loads still to hide; -1: all
}

func (h *hidingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if n := h.hide.Load(); n != 0 {
		if n > 0 {
			h.hide.Add(-1)
		}
		return nil, fs.ErrNotExist
	}
	return h.countingStorage.Load(ctx, key)
}

// TestFollowerStorageHidingErrors: a storage that answers "not found" for
// a failed read (Redis restarting) does not make a follower drop what it
// read, nor read everything twice: a revision gone missing, or one that
// appears or changes epoch during a full read, is an error, and the next
// Sync reads from where the last good one left off.
func TestFollowerStorageHidingErrors(t *testing.T) {
	s, cs := newCountingStore(t)
	hs := &hidingStorage{countingStorage: cs}
	s.storage = hs
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Hiding CA"))
	for i := range 5 {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprint("h", i)}))
		if _, err := s.PutClient(ctx, fmt.Sprint("h", i), "", string(c.CertPEM())); err != nil {
			t.Fatal(err)
		}
	}
	f := s.ClientsFollower(0)
	if names, full := syncNames(t, f, false); !full || len(names) != 5 {
		t.Fatalf("first sync: %v %v", names, full)
	}
	at := f.At()

	// Every read hidden: the revision is "missing". Not a full read of
	// nothing: an error.
	hs.hide.Store(-1)
	read := 0
	if _, _, err := f.Sync(ctx, false, func(string, []byte) { read++ }); err == nil {
		t.Fatalf("a hidden revision read as a change (%d entries)", read)
	}
	if f.At() != at {
		t.Fatalf("the follower moved: %v -> %v", at, f.At())
	}

	// A full read whose first read (the revision) is hidden: an error,
	// not a full read at revision zero that the next sync repeats.
	hs.hide.Store(1)
	if _, _, err := f.Sync(ctx, true, func(string, []byte) {}); err == nil {
		t.Fatal("a full read with the revision hidden at its start succeeded")
	}
	if names, full := syncNames(t, f, true); !full || len(names) != 5 || f.At() != at {
		t.Fatalf("full read once the storage is back: %d names, at %v (want %v)", len(names), f.At(), at)
	}
	if names, full := syncNames(t, f, false); full || len(names) != 0 {
		t.Fatalf("after the full read: %v (full %v)", names, full)
	}

	// A change whose entry read is hidden (the entry "deleted"): the
	// revision read after it fails too, so the sync is an error and the
	// change is read again.
	if err := s.DeleteClient(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutClient(ctx, "h2", "gold", string(demopki.Must(ca.Issue(demopki.Options{CommonName: "h2 new"})).CertPEM())); err != nil {
		t.Fatal(err)
	}
	hs.hide.Store(-1)
	if _, _, err := f.Sync(ctx, false, func(string, []byte) {}); err == nil {
		t.Fatal("a sync with every read hidden succeeded")
	}
	hs.hide.Store(0)
	if names, full := syncNames(t, f, false); full || !slices.Equal(names, []string{"-h1", "h2"}) {
		t.Fatalf("after the storage came back: %v (full %v)", names, full)
	}

	// A written entry that alone reads as "not found" (the revision reads
	// fine): not taken as deleted, its last version stays.
	if _, err := s.PutClient(ctx, "h3", "silver", string(demopki.Must(ca.Issue(demopki.Options{CommonName: "h3 new"})).CertPEM())); err != nil {
		t.Fatal(err)
	}
	s.storage = &hideOne{Storage: cs, key: clientKey("h3")}
	if names, full := syncNames(t, f, false); full || len(names) != 0 {
		t.Fatalf("a written entry read as missing: %v (full %v)", names, full)
	}
}

// hideOne answers "not found" for one key.
type hideOne struct {
	certmagic.Storage
	key string
}

func (h *hideOne) Load(ctx context.Context, key string) ([]byte, error) {
	if key == h.key {
		return nil, fs.ErrNotExist
	}
	return h.Storage.Load(ctx, key)
}

// failingIndex fails every write and delete of the certificate index.
type failingIndex struct{ *countingStorage }

var errIndex = errors.New("index write failed")

func (f failingIndex) Store(ctx context.Context, key string, value []byte) error {
	if strings.HasPrefix(key, holdersDir+"/") {
		return errIndex
	}
	return f.countingStorage.Store(ctx, key, value)
}

func (f failingIndex) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, holdersDir+"/") {
		return errIndex
	}
	return f.countingStorage.Delete(ctx, key)
}

// TestChangeRecordedWhenCutShort: a change whose entry was written (or
// deleted) but whose certificate index could not be is recorded in the
// change log all the same: other instances read it at their next refresh,
// not at the next full read.
func TestChangeRecordedWhenCutShort(t *testing.T) {
	s, cs := newCountingStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Cut CA"))
	a := demopki.Must(ca.Issue(demopki.Options{CommonName: "a"}))
	b := demopki.Must(ca.Issue(demopki.Options{CommonName: "b"}))
	if _, err := s.PutClient(ctx, "a", "", string(a.CertPEM())); err != nil {
		t.Fatal(err)
	}
	f := s.ClientsFollower(0)
	syncNames(t, f, false)
	s.storage = failingIndex{cs}
	if err := s.DeleteClient(ctx, "a"); !errors.Is(err, errIndex) {
		t.Fatalf("delete: %v", err)
	}
	if names, _ := syncNames(t, f, false); !slices.Equal(names, []string{"-a"}) {
		t.Fatalf("a deletion cut short: %v", names)
	}
	if err := s.PutClients(ctx, []NewClient{{Alias: "b", Certificate: string(b.CertPEM())}}); !errors.Is(err, errIndex) {
		t.Fatalf("import: %v", err)
	}
	if names, _ := syncNames(t, f, false); !slices.Equal(names, []string{"b"}) {
		t.Fatalf("an import cut short: %v", names)
	}
}

// TestCorruptRevision: a revision that does not decode does not block the
// full read (the repair), and the next write starts a new epoch over it.
func TestCorruptRevision(t *testing.T) {
	s, cs := newCountingStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Corrupt CA"))
	if _, err := s.PutClient(ctx, "a", "", string(demopki.Must(ca.Issue(demopki.Options{CommonName: "a"})).CertPEM())); err != nil {
		t.Fatal(err)
	}
	f := s.ClientsFollower(0)
	syncNames(t, f, false)
	if err := cs.Store(ctx, revisionKey(clientsDir), []byte(`{"epoch": tru`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Sync(ctx, false, func(string, []byte) {}); err == nil {
		t.Fatal("a corrupt revision followed")
	}
	if names, full := syncNames(t, f, true); !full || !slices.Equal(names, []string{"a"}) {
		t.Fatalf("full read over a corrupt revision: %v %v", names, full)
	}
	if _, err := s.PutClient(ctx, "b", "", string(demopki.Must(ca.Issue(demopki.Options{CommonName: "b"})).CertPEM())); err != nil {
		t.Fatal(err)
	}
	if names, _ := syncNames(t, f, false); !slices.Contains(names, "b") {
		t.Fatalf("after the next write: %v", names)
	}
}
