package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
)

func newStore(t *testing.T) (*Store, *certmagic.FileStorage, *observer.ObservedLogs) {
	fs := &certmagic.FileStorage{Path: t.TempDir()}
	core, logs := observer.New(zap.DebugLevel)
	return New(fs, zap.New(core)), fs, logs
}

func TestClients(t *testing.T) {
	s, fs, logs := newStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Store CA"))
	alice := demopki.Must(ca.Issue(demopki.Options{CommonName: "alice"}))
	bob := demopki.Must(ca.Issue(demopki.Options{CommonName: "bob"}))

	info, err := s.PutClient(ctx, "alice", "gold", string(alice.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	if info.Alias != "alice" || info.Tier != "gold" || info.Subject != "CN=alice" || info.Issuer != "CN=Store CA" || info.Fingerprint != certcodec.Fingerprint(alice.Cert.Raw) {
		t.Fatalf("info %+v", info)
	}
	if _, err := s.PutClient(ctx, "bob", "", string(bob.CertPEM())); err != nil {
		t.Fatal(err)
	}
	// Replace.
	if _, err := s.PutClient(ctx, "alice", "silver", string(alice.CertPEM())); err != nil {
		t.Fatal(err)
	}
	clients, err := s.Clients(ctx)
	if err != nil || len(clients) != 2 || clients[0].Alias != "alice" || clients[0].Tier != "silver" || clients[1].Alias != "bob" {
		t.Fatalf("clients %v %v", clients, err)
	}

	// A corrupt entry is skipped with a log line.
	if err := fs.Store(ctx, clientsDir+"/broken.json", []byte(`{"alias":"broken","certificate":"nope"`)); err != nil {
		t.Fatal(err)
	}
	if err := fs.Store(ctx, clientsDir+"/renamed.json", []byte(`{"alias":"other","certificate":`+fmt.Sprintf("%q", alice.CertPEM())+`}`)); err != nil {
		t.Fatal(err)
	}
	clients, err = s.Clients(ctx)
	if err != nil || len(clients) != 2 {
		t.Fatalf("with corrupt entries: %d clients, %v", len(clients), err)
	}
	if n := logs.FilterMessage("skipping corrupt stored entry").Len(); n != 2 {
		t.Fatalf("%d log lines for 2 corrupt entries", n)
	}

	if err := s.DeleteClient(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteClient(ctx, "bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("CA"))
	c := demopki.Must(ca.Issue(demopki.Options{CommonName: "c"}))
	for name, call := range map[string]func() error{
		"alias with slash":    func() error { _, err := s.PutClient(ctx, "a/b", "", string(c.CertPEM())); return err },
		"alias with dots":     func() error { _, err := s.PutClient(ctx, "a..b", "", string(c.CertPEM())); return err },
		"alias dot-dot":       func() error { _, err := s.PutClient(ctx, "..", "", string(c.CertPEM())); return err },
		"empty alias":         func() error { _, err := s.PutClient(ctx, "", "", string(c.CertPEM())); return err },
		"bad PEM":             func() error { _, err := s.PutClient(ctx, "a", "", "not pem"); return err },
		"key instead of cert": func() error { _, err := s.PutClient(ctx, "a", "", string(c.KeyPEM())); return err },
		"two certificates": func() error {
			_, err := s.PutClient(ctx, "a", "", string(c.CertPEM())+string(ca.CertPEM()))
			return err
		},
		"tier with newline": func() error { _, err := s.PutClient(ctx, "a", "x\ny", string(c.CertPEM())); return err },
		"huge certificate":  func() error { _, err := s.PutClient(ctx, "a", "", strings.Repeat("A", maxPEM+1)); return err },
		"key not matching": func() error {
			_, err := s.PutKeyPair(ctx, "k", string(c.CertPEM()), string(ca.KeyPEM()), false)
			return err
		},
		"unknown key type": func() error {
			_, err := s.GenerateKeyPair(ctx, "k", GenerateRequest{CommonName: "x", KeyType: "dsa"}, false)
			return err
		},
		"no common name": func() error { _, err := s.GenerateKeyPair(ctx, "k", GenerateRequest{}, false); return err },
		"validity too long": func() error {
			_, err := s.GenerateKeyPair(ctx, "k", GenerateRequest{CommonName: "x", ValidityDays: 5000}, false)
			return err
		},
		"keypair bad name": func() error {
			_, err := s.GenerateKeyPair(ctx, "../x", GenerateRequest{CommonName: "x"}, false)
			return err
		},
	} {
		var input *InputError
		if err := call(); !errors.As(err, &input) {
			t.Errorf("%s: %v, want an InputError", name, err)
		}
	}
}

func TestKeyPairs(t *testing.T) {
	s, fs, _ := newStore(t)
	ctx := context.Background()
	for _, kt := range []string{"", "p256", "p384", "rsa2048"} {
		info, err := s.GenerateKeyPair(ctx, "gw-"+kt, GenerateRequest{CommonName: "gateway-" + kt, Organization: "Org", ValidityDays: 30, KeyType: kt}, false)
		if err != nil {
			t.Fatal(err)
		}
		want := kt
		if want == "" {
			want = "p256"
		}
		if info.KeyType != want || info.Subject != "CN=gateway-"+kt+",O=Org" {
			t.Fatalf("%s: %+v", kt, info)
		}
	}
	ca := demopki.Must(demopki.NewCA("Upload CA"))
	up := demopki.Must(ca.Issue(demopki.Options{CommonName: "uploaded"}))
	if _, err := s.PutKeyPair(ctx, "uploaded", string(up.CertPEM()), string(up.KeyPEM()), false); err != nil {
		t.Fatal(err)
	}
	kp, err := s.KeyPair(ctx, "uploaded")
	if err != nil || kp.TLSCertificate().Leaf.Subject.CommonName != "uploaded" {
		t.Fatalf("load: %v", err)
	}
	list, err := s.KeyPairs(ctx)
	if err != nil || len(list) != 5 {
		t.Fatalf("list %d %v", len(list), err)
	}
	if _, err := s.KeyPair(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if err := fs.Store(ctx, keyPairsDir+"/corrupt.json", []byte(`{"name":"corrupt","certificate":"x","private_key":"y"}`)); err != nil {
		t.Fatal(err)
	}
	if list, err := s.KeyPairs(ctx); err != nil || len(list) != 5 {
		t.Fatalf("corrupt entry not skipped: %d %v", len(list), err)
	}
	if _, err := s.KeyPair(ctx, "corrupt"); err == nil || !strings.Contains(err.Error(), "corrupt entry") {
		t.Fatalf("corrupt: %v", err)
	}
	if err := s.DeleteKeyPair(ctx, "uploaded"); err != nil {
		t.Fatal(err)
	}
}

// failingStorage fails every write.
type failingStorage struct{ *certmagic.FileStorage }

func (failingStorage) Store(context.Context, string, []byte) error {
	return errors.New("disk full")
}

func TestStorageFailure(t *testing.T) {
	fs := &certmagic.FileStorage{Path: t.TempDir()}
	s := New(failingStorage{fs}, zap.NewNop())
	ca := demopki.Must(demopki.NewCA("CA"))
	_, err := s.PutClient(context.Background(), "a", "", string(ca.CertPEM()))
	var input *InputError
	if err == nil || errors.As(err, &input) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("failed write: %v", err)
	}
}

// TestConcurrentWriters: writers of one alias hold its lock; the entry is
// always one of theirs whole.
func TestConcurrentWriters(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("CA"))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprintf("writer-%d", i)}))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.PutClient(ctx, "shared", fmt.Sprint(i), string(c.CertPEM())); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	clients, err := s.Clients(ctx)
	if err != nil || len(clients) != 1 {
		t.Fatalf("%d clients, %v", len(clients), err)
	}
	c := clients[0]
	if c.Cert().Subject.CommonName != "writer-"+c.Tier {
		t.Fatalf("entry mixes writers: tier %s, certificate %s", c.Tier, c.Cert().Subject.CommonName)
	}
}

func TestConflictsAndLeaks(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("CA"))
	c := demopki.Must(ca.Issue(demopki.Options{CommonName: "c"}))
	if _, err := s.PutClient(ctx, "c1", "", string(c.CertPEM())); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutClient(ctx, "c2", "", string(c.CertPEM())); !errors.Is(err, ErrConflict) {
		t.Fatalf("same certificate under a second alias: %v", err)
	}
	if _, err := s.PutClient(ctx, "c1", "gold", string(c.CertPEM())); err != nil {
		t.Fatalf("replacing the same alias: %v", err)
	}

	if _, err := s.PutKeyPair(ctx, "k", string(c.CertPEM()), string(c.KeyPEM()), false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GenerateKeyPair(ctx, "k", GenerateRequest{CommonName: "x"}, false); !errors.Is(err, ErrConflict) {
		t.Fatalf("generating over an existing key pair: %v", err)
	}
	if _, err := s.GenerateKeyPair(ctx, "k", GenerateRequest{CommonName: "x"}, true); err != nil {
		t.Fatalf("replacing: %v", err)
	}
	// A key pasted into the certificate field is refused, not stored to be
	// served back.
	var input *InputError
	if _, err := s.PutKeyPair(ctx, "k2", string(c.CertPEM())+string(c.KeyPEM()), string(c.KeyPEM()), false); !errors.As(err, &input) {
		t.Fatalf("key in the certificate field: %v", err)
	}
	kp, err := s.KeyPair(ctx, "k")
	if err != nil || strings.Contains(kp.Certificate, "PRIVATE") {
		t.Fatalf("stored certificate field: %v", err)
	}
}

// TestClientGroupsAndRotation: groups are checked, sorted and kept; a
// client gets a second certificate (and a third), each refused when stored
// under another alias; one is removed by its fingerprint, but never the
// last; an entry written before groups and rotation is read as it was.
func TestClientGroupsAndRotation(t *testing.T) {
	s, fs, _ := newStore(t)
	ctx := context.Background()
	ca := demopki.Must(demopki.NewCA("Store CA"))
	old := demopki.Must(ca.Issue(demopki.Options{CommonName: "svc"}))
	renewed := demopki.Must(ca.Issue(demopki.Options{CommonName: "svc, renewed"}))
	other := demopki.Must(ca.Issue(demopki.Options{CommonName: "other"}))

	info, err := s.PutClient(ctx, "svc", "gold", string(old.CertPEM()), "payments", "billing", "payments")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(info.Groups) != "[billing payments]" || len(info.Certificates) != 1 {
		t.Fatalf("info %+v", info)
	}
	if _, err := s.PutClient(ctx, "bad", "", string(other.CertPEM()), "a/b"); !isInput(err) {
		t.Fatalf("bad group: %v", err)
	}
	if _, err := s.PutClient(ctx, "other", "", string(other.CertPEM())); err != nil {
		t.Fatal(err)
	}

	// Rotation.
	if _, err := s.AddClientCertificate(ctx, "svc", string(other.CertPEM())); !errors.Is(err, ErrConflict) {
		t.Fatalf("another alias's certificate: %v", err)
	}
	if _, err := s.AddClientCertificate(ctx, "nobody", string(renewed.CertPEM())); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown alias: %v", err)
	}
	if _, err := s.PutClient(ctx, "thief", "", string(renewed.CertPEM())); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteClient(ctx, "thief"); err != nil {
		t.Fatal(err)
	}
	info, err = s.AddClientCertificate(ctx, "svc", string(renewed.CertPEM()))
	if err != nil {
		t.Fatal(err)
	}
	oldFP, newFP := certcodec.Fingerprint(old.Cert.Raw), certcodec.Fingerprint(renewed.Cert.Raw)
	if info.Fingerprint != newFP || info.Subject != "CN=svc\\, renewed" || info.Tier != "gold" || len(info.Certificates) != 2 ||
		info.Certificates[0].Fingerprint != oldFP || info.Certificates[1].Fingerprint != newFP {
		t.Fatalf("after adding: %+v", info)
	}
	if again, err := s.AddClientCertificate(ctx, "svc", string(old.CertPEM())); err != nil || len(again.Certificates) != 2 {
		t.Fatalf("adding one it has: %+v %v", again, err)
	}
	if _, err := s.PutClient(ctx, "thief", "", string(old.CertPEM())); !errors.Is(err, ErrConflict) {
		t.Fatalf("a rotating client's old certificate under another alias: %v", err)
	}
	clients, err := s.Clients(ctx)
	if err != nil || len(clients) != 2 || len(clients[1].Certs()) != 2 || clients[1].Cert().Subject.CommonName != "svc, renewed" || !clients[1].InGroup("billing") || clients[1].InGroup("other") {
		t.Fatalf("clients %v %v", clients, err)
	}
	for i := 0; i < MaxClientCertificates-2; i++ {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprint("svc ", i)}))
		if _, err := s.AddClientCertificate(ctx, "svc", string(c.CertPEM())); err != nil {
			t.Fatal(err)
		}
	}
	extra := demopki.Must(ca.Issue(demopki.Options{CommonName: "one too many"}))
	if _, err := s.AddClientCertificate(ctx, "svc", string(extra.CertPEM())); !errors.Is(err, ErrConflict) {
		t.Fatalf("beyond %d certificates: %v", MaxClientCertificates, err)
	}

	if _, err := s.RemoveClientCertificate(ctx, "svc", strings.Repeat("ab", 32)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown fingerprint: %v", err)
	}
	if _, err := s.RemoveClientCertificate(ctx, "nobody", oldFP); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown alias: %v", err)
	}
	info, err = s.RemoveClientCertificate(ctx, "svc", strings.ToUpper(oldFP))
	if err != nil || len(info.Certificates) != MaxClientCertificates-1 {
		t.Fatalf("removing the old one: %+v %v", info, err)
	}
	for _, c := range info.Certificates[:len(info.Certificates)-1] {
		if _, err := s.RemoveClientCertificate(ctx, "svc", c.Fingerprint); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RemoveClientCertificate(ctx, "svc", info.Fingerprint); !errors.Is(err, ErrConflict) {
		t.Fatalf("removing the last: %v", err)
	}
	clients, _ = s.Clients(ctx)
	if len(clients[1].Certs()) != 1 || certcodec.Fingerprint(clients[1].Cert().Raw) != info.Fingerprint {
		t.Fatalf("left: %+v", clients[1].Info())
	}
	// The certificate removed is free for another alias.
	if _, err := s.PutClient(ctx, "thief", "", string(old.CertPEM())); err != nil {
		t.Fatalf("a removed certificate: %v", err)
	}

	// An entry of before: one certificate, no groups.
	if err := fs.Store(ctx, clientsDir+"/legacy.json", []byte(`{"alias":"legacy","tier":"bronze","certificate":`+fmt.Sprintf("%q", extra.CertPEM())+`}`)); err != nil {
		t.Fatal(err)
	}
	clients, err = s.Clients(ctx)
	if err != nil || len(clients) != 4 || clients[0].Alias != "legacy" || len(clients[0].Certs()) != 1 || clients[0].Groups != nil {
		t.Fatalf("legacy entry: %v %v", clients, err)
	}
	if li := clients[0].Info(); li.Tier != "bronze" || li.Groups == nil || len(li.Certificates) != 1 || li.Fingerprint != certcodec.Fingerprint(extra.Cert.Raw) {
		t.Fatalf("legacy info %+v", li)
	}
	// And an entry written now is read by the code of before: its
	// "certificate" is the newest.
	data, err := fs.Load(ctx, clientsDir+"/svc.json")
	if err != nil {
		t.Fatal(err)
	}
	var before struct{ Alias, Tier, Certificate string }
	if err := json.Unmarshal(data, &before); err != nil || before.Alias != "svc" || !strings.Contains(before.Certificate, "BEGIN CERTIFICATE") {
		t.Fatalf("entry as read before: %+v %v", before, err)
	}
}

func isInput(err error) bool {
	var input *InputError
	return errors.As(err, &input)
}
