// Package store keeps the trusted clients and the gateway's key pairs in
// Caddy's storage (a certmagic.Storage: the file system by default, Redis,
// Consul, S3... through storage modules), so every Caddy instance sharing
// the storage shares them.
//
// Each entry is one JSON value under its own key, written in one Store call
// while holding the storage's lock for that key: a crash mid-write leaves
// the old entry or the new one, and concurrent writers do not interleave.
package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/keystore"
)

// Prefix is where this project's entries live in the storage.
const Prefix = "caddy_mtls"

// Timeout is how long one piece of storage work may take: a reading of the
// stored clients or of a stored key pair, or the storage work of one admin
// API call. Callers bound their contexts with it, so that a storage that
// hangs does not stall a refresh or a request for good.
const Timeout = 30 * time.Second

const (
	clientsDir  = Prefix + "/clients"
	keyPairsDir = Prefix + "/keypairs"
)

// ErrNotFound is returned for a name that has no entry.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a write would clash with what is stored.
var ErrConflict = errors.New("conflict")

// InputError is bad input from the caller: the API answers it with 400.
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &InputError{msg: fmt.Sprintf(format, args...)}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckName returns an InputError unless name is a valid alias or key pair
// name: 1 to 128 letters, digits, '.', '_' or '-', starting with a letter
// or digit, and no "..".
func CheckName(name string) error {
	if !nameRE.MatchString(name) || strings.Contains(name, "..") {
		return inputErrorf("invalid name %.130q: want 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// Store reads and writes entries in a certmagic storage.
type Store struct {
	storage certmagic.Storage
	logger  *zap.Logger
}

// New returns a store over storage; logger reports skipped entries.
func New(storage certmagic.Storage, logger *zap.Logger) *Store {
	return &Store{storage: storage, logger: logger}
}

// Client is a trusted client: its alias, tier and groups, and its
// certificates. A client has one certificate, and more while it rotates:
// each is accepted as the client.
//
// The entry keeps the newest certificate in "certificate", where entries
// without groups or rotation (and instances before them) read it, and the
// others in "other_certificates".
type Client struct {
	Alias             string   `json:"alias"`
	Tier              string   `json:"tier,omitempty"`
	Groups            []string `json:"groups,omitempty"`
	Certificate       string   `json:"certificate"`                  // PEM, the newest
	OtherCertificates []string `json:"other_certificates,omitempty"` // PEM, oldest first
	Revision          uint64   `json:"revision,omitempty"`           // of the change log when written; 0 before it

	certs []*x509.Certificate // the others, oldest first, then the newest
}

// Cert returns the client's newest certificate.
func (c *Client) Cert() *x509.Certificate { return c.certs[len(c.certs)-1] }

// Certs returns every certificate of the client, oldest first.
func (c *Client) Certs() []*x509.Certificate { return c.certs }

// InGroup tells whether the client belongs to the group.
func (c *Client) InGroup(group string) bool {
	for _, g := range c.Groups {
		if g == group {
			return true
		}
	}
	return false
}

// ClientInfo describes a client for listing. Subject, issuer, fingerprint
// and not after are those of its newest certificate; Certificates lists
// them all, oldest first.
type ClientInfo struct {
	Alias        string            `json:"alias"`
	Tier         string            `json:"tier"`
	Groups       []string          `json:"groups"`
	Subject      string            `json:"subject"`
	Issuer       string            `json:"issuer"`
	Fingerprint  string            `json:"fingerprint"`
	NotAfter     time.Time         `json:"not_after"`
	Certificates []CertificateInfo `json:"certificates"`
}

// CertificateInfo describes one certificate of a client.
type CertificateInfo struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	NotAfter    time.Time `json:"not_after"`
}

// Info describes the client.
func (c *Client) Info() ClientInfo {
	newest := c.Cert()
	info := ClientInfo{
		Alias: c.Alias, Tier: c.Tier, Groups: c.Groups,
		Subject: newest.Subject.String(), Issuer: newest.Issuer.String(),
		Fingerprint: certcodec.Fingerprint(newest.Raw), NotAfter: newest.NotAfter.UTC(),
		Certificates: make([]CertificateInfo, 0, len(c.certs)),
	}
	if info.Groups == nil {
		info.Groups = []string{}
	}
	for _, cert := range c.certs {
		info.Certificates = append(info.Certificates, CertificateInfo{
			Fingerprint: certcodec.Fingerprint(cert.Raw), Subject: cert.Subject.String(), NotAfter: cert.NotAfter.UTC(),
		})
	}
	return info
}

// setCerts sets the client's certificates, oldest first, and their PEM.
func (c *Client) setCerts(certs []*x509.Certificate) {
	c.certs = certs
	c.OtherCertificates = nil
	for _, cert := range certs[:len(certs)-1] {
		c.OtherCertificates = append(c.OtherCertificates, encodeCert(cert))
	}
	c.Certificate = encodeCert(certs[len(certs)-1])
}

func encodeCert(cert *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
}

// maxPEM bounds a certificate or key given to the store.
const maxPEM = 64 << 10

// MaxClientCertificates is the most certificates one client may hold: a
// rotation needs two.
const MaxClientCertificates = 4

// maxGroups bounds the groups of one client.
const maxGroups = 64

// CheckGroups returns the groups sorted, without repeats, or an
// InputError unless every group is a valid name (as CheckName).
func CheckGroups(groups []string) ([]string, error) {
	if len(groups) > maxGroups {
		return nil, inputErrorf("too many groups: at most %d", maxGroups)
	}
	if len(groups) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(groups))
	for _, g := range groups {
		if err := CheckName(g); err != nil {
			return nil, inputErrorf("group: %v", err)
		}
		out = append(out, g)
	}
	sort.Strings(out)
	n := 1
	for _, g := range out[1:] {
		if g != out[n-1] {
			out[n] = g
			n++
		}
	}
	return out[:n], nil
}

// PutClient adds or replaces the client alias, with one certificate and
// the groups given (none: it belongs to no group).
func (s *Store) PutClient(ctx context.Context, alias, tier, certPEM string, groups ...string) (ClientInfo, error) {
	c, err := newClient(NewClient{Alias: alias, Tier: tier, Certificate: certPEM, Groups: groups})
	if err != nil {
		return ClientInfo{}, err
	}
	if err := s.putClients(ctx, []*Client{c}); err != nil {
		return ClientInfo{}, err
	}
	return c.Info(), nil
}

// NewClient is a client to store: PutClients takes many.
type NewClient struct {
	Alias       string   `json:"alias"`
	Tier        string   `json:"tier,omitempty"`
	Certificate string   `json:"certificate"`
	Groups      []string `json:"groups,omitempty"`
}

// MaxPutClients is the most clients one PutClients stores: a batch is
// written under the clients' lock, within Timeout.
const MaxPutClients = 1000

// PutClients adds or replaces many clients at once, as PutClient each, in
// one change of the stored clients: all are checked (names, certificates,
// a certificate given twice or held by another client) before any is
// written.
func (s *Store) PutClients(ctx context.Context, clients []NewClient) error {
	if len(clients) == 0 || len(clients) > MaxPutClients {
		return inputErrorf("give 1 to %d clients", MaxPutClients)
	}
	list := make([]*Client, 0, len(clients))
	aliases := make(map[string]bool, len(clients))
	certs := make(map[string]string, len(clients))
	for i, nc := range clients {
		c, err := newClient(nc)
		if err != nil {
			return inputErrorf("client %d (%.130q): %v", i+1, nc.Alias, err)
		}
		if aliases[c.Alias] {
			return inputErrorf("client %q given twice", c.Alias)
		}
		aliases[c.Alias] = true
		if other, dup := certs[string(c.Cert().Raw)]; dup {
			return inputErrorf("clients %q and %q have the same certificate", other, c.Alias)
		}
		certs[string(c.Cert().Raw)] = c.Alias
		list = append(list, c)
	}
	return s.putClients(ctx, list)
}

// newClient checks a client to store and makes it.
func newClient(nc NewClient) (*Client, error) {
	if err := CheckName(nc.Alias); err != nil {
		return nil, err
	}
	if len(nc.Tier) > 128 || strings.ContainsAny(nc.Tier, "\x00\r\n") {
		return nil, inputErrorf("invalid tier: at most 128 characters, no line breaks")
	}
	groups, err := CheckGroups(nc.Groups)
	if err != nil {
		return nil, err
	}
	cert, err := parseOneCertificate(nc.Certificate)
	if err != nil {
		return nil, err
	}
	c := &Client{Alias: nc.Alias, Tier: nc.Tier, Groups: groups}
	c.setCerts([]*x509.Certificate{cert})
	return c, nil
}

// putClients writes clients, each checked on its own, as one change.
func (s *Store) putClients(ctx context.Context, clients []*Client) error {
	return s.lockClients(ctx, false, func(log *changeLog) ([]string, error) {
		for _, c := range clients {
			if err := s.checkHolder(ctx, c.Cert(), c.Alias); err != nil {
				return nil, err
			}
		}
		names := make([]string, 0, len(clients))
		for _, c := range clients {
			old, err := s.client(ctx, c.Alias)
			if err != nil {
				return names, err
			}
			c.Revision = log.next() + uint64(len(names))
			names = append(names, c.Alias) // recorded even if the write fails
			if err := s.writeClient(ctx, old, c); err != nil {
				return names, err
			}
		}
		return names, nil
	})
}

// AddClientCertificate adds a certificate to the client alias, which then
// accepts it besides its others (to rotate: add the new one, then remove
// the old one). The certificate becomes the newest; one the client has
// already changes nothing. It is refused with ErrConflict when stored
// under another alias, or when the client has MaxClientCertificates.
func (s *Store) AddClientCertificate(ctx context.Context, alias, certPEM string) (ClientInfo, error) {
	if err := CheckName(alias); err != nil {
		return ClientInfo{}, err
	}
	cert, err := parseOneCertificate(certPEM)
	if err != nil {
		return ClientInfo{}, err
	}
	var info ClientInfo
	err = s.changeClients(ctx, alias, false, func(c *Client, log *changeLog) (bool, error) {
		if c == nil {
			return false, fmt.Errorf("client %q: %w", alias, ErrNotFound)
		}
		info = c.Info()
		if c.holds(cert) {
			return false, nil
		}
		if err := s.checkHolder(ctx, cert, alias); err != nil {
			return false, err
		}
		if len(c.certs) >= MaxClientCertificates {
			return false, fmt.Errorf("client %q has %d certificates already (remove one first): %w", alias, len(c.certs), ErrConflict)
		}
		next := *c
		next.setCerts(append(c.certs[:len(c.certs):len(c.certs)], cert))
		next.Revision = log.next()
		if err := s.writeClient(ctx, c, &next); err != nil {
			return true, err
		}
		info = next.Info()
		return true, nil
	})
	return info, err
}

// RemoveClientCertificate removes the certificate whose SHA-256
// fingerprint (hex, as listed) is given from the client alias. Removing
// the client's last certificate is refused with ErrConflict: delete the
// client instead.
func (s *Store) RemoveClientCertificate(ctx context.Context, alias, fingerprint string) (ClientInfo, error) {
	if err := CheckName(alias); err != nil {
		return ClientInfo{}, err
	}
	fingerprint = strings.ToLower(strings.ReplaceAll(fingerprint, ":", ""))
	var info ClientInfo
	err := s.changeClients(ctx, alias, false, func(c *Client, log *changeLog) (bool, error) {
		if c == nil {
			return false, fmt.Errorf("client %q: %w", alias, ErrNotFound)
		}
		keep := make([]*x509.Certificate, 0, len(c.certs))
		for _, cert := range c.certs {
			if certcodec.Fingerprint(cert.Raw) != fingerprint {
				keep = append(keep, cert)
			}
		}
		switch {
		case len(keep) == len(c.certs):
			return false, fmt.Errorf("client %q has no certificate %.64q: %w", alias, fingerprint, ErrNotFound)
		case len(keep) == 0:
			return false, fmt.Errorf("the certificate is client %q's last (delete the client instead): %w", alias, ErrConflict)
		}
		next := *c
		next.setCerts(keep)
		next.Revision = log.next()
		if err := s.writeClient(ctx, c, &next); err != nil {
			return true, err
		}
		info = next.Info()
		return true, nil
	})
	return info, err
}

// DeleteClient removes the client alias.
func (s *Store) DeleteClient(ctx context.Context, alias string) error {
	if err := CheckName(alias); err != nil {
		return err
	}
	return s.changeClients(ctx, alias, true, func(c *Client, _ *changeLog) (bool, error) {
		if c == nil {
			return false, fmt.Errorf("client %q: %w", alias, ErrNotFound)
		}
		return true, s.writeClient(ctx, c, nil)
	})
}

// changeClients calls change with the stored client alias (nil if none)
// while holding the lock of the clients, so that one writer of clients
// changes them at a time: the check for a certificate under another alias
// holds when the entry is written, and the change log records changes in
// the order they were made. When change tells it changed the client, the
// change is recorded in the log.
func (s *Store) changeClients(ctx context.Context, alias string, deletes bool, change func(*Client, *changeLog) (bool, error)) error {
	return s.lockClients(ctx, deletes, func(log *changeLog) ([]string, error) {
		c, err := s.client(ctx, alias)
		if err != nil {
			return nil, err
		}
		// A change that failed after it began writing is recorded too:
		// recording a change that did not happen costs a read, missing one
		// leaves other instances behind until their next full read.
		changed, err := change(c, log)
		if changed {
			return []string{alias}, err
		}
		return nil, err
	})
}

// lockClients calls change while holding the lock of the clients, with
// their change log, and records the clients it tells it changed (as
// deletions if deletes), also when it fails after changing some.
//
// The first change made where the log does not exist (a storage written
// by a version without it) indexes the stored clients' certificates.
func (s *Store) lockClients(ctx context.Context, deletes bool, change func(*changeLog) ([]string, error)) error {
	if err := s.storage.Lock(ctx, clientsDir); err != nil {
		return fmt.Errorf("locking %s: %w", clientsDir, err)
	}
	defer func() { _ = s.storage.Unlock(context.WithoutCancel(ctx), clientsDir) }()
	log, fresh, err := s.openLog(ctx, clientsDir)
	if err != nil {
		return err
	}
	if fresh {
		if err := s.indexClients(ctx); err != nil {
			return err
		}
	}
	names, err := change(log)
	if len(names) > 0 || (fresh && err == nil) {
		if rerr := s.record(ctx, clientsDir, log, deletes, names...); err == nil {
			err = rerr
		}
	}
	return err
}

// client returns the stored client alias, or nil. An entry that does not
// decode counts as none (it is replaced by a write).
func (s *Store) client(ctx context.Context, alias string) (*Client, error) {
	data, err := s.storage.Load(ctx, clientKey(alias))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", clientKey(alias), err)
	}
	c, err := DecodeClient(alias, data)
	if err != nil {
		s.logger.Warn("stored client corrupt; a write replaces it", zap.String("key", clientKey(alias)), zap.Error(err))
		return nil, nil
	}
	return c, nil
}

// writeClient replaces the entry of old (nil: none) with next (nil:
// none), and the index of their certificates. The caller holds the
// clients' lock.
func (s *Store) writeClient(ctx context.Context, old, next *Client) error {
	if next != nil {
		if err := s.store(ctx, clientKey(next.Alias), next); err != nil {
			return err
		}
		for _, cert := range next.certs {
			if old == nil || !old.holds(cert) {
				if err := s.store(ctx, holderKey(cert), holderEntry{Alias: next.Alias}); err != nil {
					return err
				}
			}
		}
	} else if old != nil {
		if err := s.storage.Delete(ctx, clientKey(old.Alias)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("deleting %s: %w", clientKey(old.Alias), err)
		}
	}
	if old == nil {
		return nil
	}
	for _, cert := range old.certs {
		if next == nil || !next.holds(cert) {
			if err := s.storage.Delete(ctx, holderKey(cert)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("deleting %s: %w", holderKey(cert), err)
			}
		}
	}
	return nil
}

// The certificate index: for each stored client certificate, which alias
// holds it, so that a write checks that a certificate is not another
// client's by one read, not by reading every client.
const holdersDir = Prefix + "/client_certificates"

type holderEntry struct {
	Alias string `json:"alias"`
}

func holderKey(cert *x509.Certificate) string {
	return holdersDir + "/" + certcodec.Fingerprint(cert.Raw) + ".json"
}

// checkHolder returns ErrConflict when cert is held by a client other than
// alias. An index entry whose client no longer holds the certificate (a
// write cut short) is no conflict.
func (s *Store) checkHolder(ctx context.Context, cert *x509.Certificate, alias string) error {
	var h holderEntry
	found, err := s.loadJSON(ctx, holderKey(cert), &h)
	if err != nil || !found || h.Alias == alias || CheckName(h.Alias) != nil {
		return err
	}
	other, err := s.client(ctx, h.Alias)
	if err != nil {
		return err
	}
	if other != nil && other.holds(cert) {
		return fmt.Errorf("the certificate is stored already, as client %q: %w", other.Alias, ErrConflict)
	}
	return nil
}

// indexTimeout bounds the indexing of the stored clients' certificates,
// done once, by the first write where no change log is: it outlasts the
// write's own timeout (100,000 clients take a while), and a write cut
// short would start it again.
const indexTimeout = 10 * time.Minute

// indexClients writes the certificate index of every stored client; the
// caller holds the clients' lock.
func (s *Store) indexClients(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), indexTimeout)
	defer cancel()
	keys, err := s.storage.List(ctx, clientsDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", clientsDir, err)
	}
	var aliases []string
	for _, key := range keys {
		if alias, ok := strings.CutSuffix(path.Base(key), ".json"); ok {
			aliases = append(aliases, alias)
		}
	}
	n := 0
	var writeErr error
	err = s.loadEach(ctx, clientsDir, aliases, func(alias string, data []byte) {
		if data == nil || writeErr != nil {
			return
		}
		c, err := DecodeClient(alias, data)
		if err != nil {
			s.logger.Warn("skipping corrupt stored entry", zap.String("key", clientKey(alias)), zap.Error(err))
			return
		}
		for _, cert := range c.certs {
			if writeErr = s.store(ctx, holderKey(cert), holderEntry{Alias: c.Alias}); writeErr != nil {
				return
			}
		}
		n++
	})
	if err == nil {
		err = writeErr
	}
	if err != nil {
		return fmt.Errorf("indexing the stored clients' certificates: %w", err)
	}
	if n > 0 {
		s.logger.Info("indexed the stored clients' certificates", zap.Int("clients", n))
	}
	return nil
}

func clientKey(alias string) string { return path.Join(clientsDir, alias+".json") }

// holds tells whether cert is one of the client's.
func (c *Client) holds(cert *x509.Certificate) bool {
	for _, have := range c.certs {
		if bytes.Equal(have.Raw, cert.Raw) {
			return true
		}
	}
	return false
}

// Clients returns every stored client, sorted by alias. An entry that does
// not decode is skipped and logged, never fatal.
func (s *Store) Clients(ctx context.Context) ([]*Client, error) {
	var out []*Client
	err := s.each(ctx, clientsDir, func(key string, data []byte) error {
		c, err := DecodeClient(strings.TrimSuffix(path.Base(key), ".json"), data)
		if err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Alias < out[j].Alias })
	return out, err
}

// listBatch is how many clients ListClients loads at once.
const listBatch = 64

// ListClients calls fn with the stored clients whose alias sorts after
// after ("": from the first), in alias order, only those of group (""
// for all), until fn returns false; more tells whether stored clients
// remain after the last one given to fn (they may all be of other
// groups). It lists the aliases once and loads the clients a batch at a
// time, so that a listing of many clients is never held whole. Corrupt
// entries are skipped and logged.
func (s *Store) ListClients(ctx context.Context, after, group string, fn func(*Client) bool) (more bool, err error) {
	keys, err := s.storage.List(ctx, clientsDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("listing %s: %w", clientsDir, err)
	}
	var aliases []string
	for _, key := range keys {
		if alias, ok := strings.CutSuffix(path.Base(key), ".json"); ok && alias > after {
			aliases = append(aliases, alias)
		}
	}
	sort.Strings(aliases)
	for len(aliases) > 0 {
		batch := aliases[:min(listBatch, len(aliases))]
		aliases = aliases[len(batch):]
		loaded := make(map[string]*Client, len(batch))
		err := s.loadEach(ctx, clientsDir, batch, func(alias string, data []byte) {
			if data == nil {
				return // deleted since the listing
			}
			c, err := DecodeClient(alias, data)
			if err != nil {
				s.logger.Warn("skipping corrupt stored entry", zap.String("key", clientKey(alias)), zap.Error(err))
				return
			}
			loaded[alias] = c
		})
		if err != nil {
			return false, err
		}
		for i, alias := range batch {
			c := loaded[alias]
			if c == nil || (group != "" && !c.InGroup(group)) {
				continue
			}
			if !fn(c) {
				return i < len(batch)-1 || len(aliases) > 0, nil
			}
		}
	}
	return false, nil
}

// DecodeClient decodes the stored entry of the client alias (as a
// Follower of the clients reads it), checking it as a write would.
func DecodeClient(alias string, data []byte) (*Client, error) {
	var c Client
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	if c.Alias != alias || CheckName(c.Alias) != nil {
		return nil, errors.New("alias does not match the entry's name")
	}
	groups, err := CheckGroups(c.Groups)
	if err != nil {
		return nil, err
	}
	c.Groups = groups
	if len(c.OtherCertificates) >= MaxClientCertificates {
		return nil, fmt.Errorf("more than %d certificates", MaxClientCertificates)
	}
	for _, p := range append(c.OtherCertificates[:len(c.OtherCertificates):len(c.OtherCertificates)], c.Certificate) {
		cert, err := parseOneCertificate(p)
		if err != nil {
			return nil, err
		}
		c.certs = append(c.certs, cert)
	}
	return &c, nil
}

// KeyPair is a stored key pair of the gateway.
type KeyPair struct {
	Name        string `json:"name"`
	Certificate string `json:"certificate"` // PEM, leaf first
	PrivateKey  string `json:"private_key"` // PEM

	tls tls.Certificate
}

// KeyPairInfo describes a key pair for listing; it holds no key material.
type KeyPairInfo struct {
	Name        string    `json:"name"`
	Subject     string    `json:"subject"`
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
	KeyType     string    `json:"key_type"`
}

// TLSCertificate returns the key pair for a tls.Config.
func (k *KeyPair) TLSCertificate() tls.Certificate { return k.tls }

// Info describes the key pair.
func (k *KeyPair) Info() KeyPairInfo {
	leaf := k.tls.Leaf
	return KeyPairInfo{Name: k.Name, Subject: leaf.Subject.String(), Fingerprint: certcodec.Fingerprint(leaf.Raw), NotAfter: leaf.NotAfter.UTC(), KeyType: KeyTypeOf(leaf)}
}

// PutKeyPair stores an uploaded key pair, after checking that the key is
// the certificate's. The certificate (chain) is PEM text or, without a
// "-----BEGIN" line, base64 of DER (as a .crt file of a Windows tool holds
// it); the key is PEM (PKCS#8, PKCS#1 RSA or SEC1 EC). An existing key pair
// of that name is replaced only when replace is true (its private key is
// gone for good then).
func (s *Store) PutKeyPair(ctx context.Context, name, certPEM, keyPEM string, replace bool) (KeyPairInfo, error) {
	if err := CheckName(name); err != nil {
		return KeyPairInfo{}, err
	}
	certPEM, err := certificateText(certPEM)
	if err != nil {
		return KeyPairInfo{}, err
	}
	kp, err := parseKeyPair(name, certPEM, keyPEM)
	if err != nil {
		return KeyPairInfo{}, err
	}
	err = s.changeKeyPairs(ctx, name, false, func(exists bool) (bool, error) {
		if exists && !replace {
			return false, fmt.Errorf("key pair %q exists (replace it with ?replace=true): %w", name, ErrConflict)
		}
		return true, s.store(ctx, keyPairKey(name), kp)
	})
	if err != nil {
		return KeyPairInfo{}, err
	}
	return kp.Info(), nil
}

// certificateText returns an uploaded certificate field as PEM: PEM text as
// it is, else (no "-----BEGIN" in it) base64 of DER, of one certificate or
// of several one after the other, PEM-encoded.
func certificateText(text string) (string, error) {
	if len(text) > maxPEM {
		return "", inputErrorf("certificate or key longer than %d bytes", maxPEM)
	}
	if strings.Contains(text, "-----BEGIN") || strings.TrimSpace(text) == "" {
		return text, nil
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(text), ""))
	if err != nil {
		return "", inputErrorf("certificate: neither PEM (no -----BEGIN line) nor base64 of DER: %v", err)
	}
	certs, err := x509.ParseCertificates(der)
	if err != nil {
		return "", inputErrorf("certificate: base64 of DER (no -----BEGIN line), but not of certificates: %v", err)
	}
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return string(out), nil
}

func parseKeyPair(name, certPEM, keyPEM string) (*KeyPair, error) {
	if len(certPEM) > maxPEM || len(keyPEM) > maxPEM {
		return nil, inputErrorf("certificate or key longer than %d bytes", maxPEM)
	}
	// The certificate field is served back by the API: it must hold
	// certificates and nothing else (a key pasted into it would leak).
	// tls.X509KeyPair then reads the key and matches it to the leaf.
	if _, err := certcodec.ParsePEM([]byte(certPEM), certcodec.PEMChain); err != nil {
		return nil, inputErrorf("certificate: %v", err)
	}
	tc, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, inputErrorf("certificate and key: %v", err)
	}
	if err := keystore.CheckKeyMatches(tc.Leaf, tc.PrivateKey); err != nil {
		return nil, inputErrorf("certificate and key: %v", err)
	}
	// Keep only what was parsed, re-encoded: the chain and a PKCS#8 key.
	var certs []byte
	for _, der := range tc.Certificate {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(tc.PrivateKey)
	if err != nil {
		return nil, inputErrorf("private key: %v", err)
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return &KeyPair{Name: name, Certificate: string(certs), PrivateKey: string(key), tls: tc}, nil
}

// KeyPair returns the stored key pair name.
func (s *Store) KeyPair(ctx context.Context, name string) (*KeyPair, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	data, err := s.storage.Load(ctx, keyPairKey(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key pair %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("loading key pair %q: %w", name, err)
	}
	return DecodeKeyPair(name, data)
}

// DecodeKeyPair decodes the stored entry of the key pair name (as a
// Follower of the key pairs reads it), checking it as an upload is.
func DecodeKeyPair(name string, data []byte) (*KeyPair, error) {
	var stored KeyPair
	if err := json.Unmarshal(data, &stored); err != nil {
		return nil, fmt.Errorf("key pair %q: corrupt entry: %w", name, err)
	}
	kp, err := parseKeyPair(name, stored.Certificate, stored.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("key pair %q: corrupt entry: %w", name, err)
	}
	return kp, nil
}

// KeyPairs describes every stored key pair, sorted by name; corrupt entries
// are skipped and logged.
func (s *Store) KeyPairs(ctx context.Context) ([]KeyPairInfo, error) {
	var out []KeyPairInfo
	err := s.each(ctx, keyPairsDir, func(key string, data []byte) error {
		name := strings.TrimSuffix(path.Base(key), ".json")
		kp, err := DecodeKeyPair(name, data)
		if err != nil {
			return err
		}
		out = append(out, kp.Info())
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// DeleteKeyPair removes the key pair name.
func (s *Store) DeleteKeyPair(ctx context.Context, name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	return s.changeKeyPairs(ctx, name, true, func(exists bool) (bool, error) {
		if !exists {
			return false, fmt.Errorf("key pair %q: %w", name, ErrNotFound)
		}
		if err := s.storage.Delete(ctx, keyPairKey(name)); err != nil {
			return false, fmt.Errorf("deleting %s: %w", keyPairKey(name), err)
		}
		return true, nil
	})
}

// changeKeyPairs calls change, telling whether the key pair name exists,
// while holding the lock of the key pairs; when change tells it changed
// the key pair, the change is recorded in the key pairs' change log (as a
// deletion if deletes).
func (s *Store) changeKeyPairs(ctx context.Context, name string, deletes bool, change func(exists bool) (bool, error)) error {
	if err := s.storage.Lock(ctx, keyPairsDir); err != nil {
		return fmt.Errorf("locking %s: %w", keyPairsDir, err)
	}
	defer func() { _ = s.storage.Unlock(context.WithoutCancel(ctx), keyPairsDir) }()
	log, _, err := s.openLog(ctx, keyPairsDir)
	if err != nil {
		return err
	}
	_, err = s.storage.Stat(ctx, keyPairKey(name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checking %s: %w", keyPairKey(name), err)
	}
	changed, err := change(err == nil)
	if err != nil || !changed {
		return err
	}
	return s.record(ctx, keyPairsDir, log, deletes, name)
}

func keyPairKey(name string) string { return path.Join(keyPairsDir, name+".json") }

// store writes v as JSON under key; the caller holds the lock of its folder.
func (s *Store) store(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.storage.Store(ctx, key, data); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	return nil
}

// each calls fn with every entry under dir; entries fn refuses are skipped
// and logged.
func (s *Store) each(ctx context.Context, dir string, fn func(key string, data []byte) error) error {
	keys, err := s.storage.List(ctx, dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		data, err := s.storage.Load(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			return fmt.Errorf("loading %s: %w", key, err)
		}
		if err := fn(key, data); err != nil {
			s.logger.Warn("skipping corrupt stored entry", zap.String("key", key), zap.Error(err))
		}
	}
	return nil
}

// parseOneCertificate parses a PEM text that holds exactly one certificate.
func parseOneCertificate(certPEM string) (*x509.Certificate, error) {
	if len(certPEM) > maxPEM {
		return nil, inputErrorf("certificate longer than %d bytes", maxPEM)
	}
	certs, err := certcodec.ParsePEM([]byte(certPEM), certcodec.PEMOne)
	if errors.Is(err, certcodec.ErrPEMMoreThanOne) {
		return nil, inputErrorf("certificate: %v (give the client's certificate alone)", err)
	}
	if err != nil {
		return nil, inputErrorf("certificate: %v", err)
	}
	return certs[0], nil
}
