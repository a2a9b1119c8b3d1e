package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// DefaultKeyPairRefresh is how often stored key pairs are brought up to
// date; keyPairsFullRefresh how often they are all read again, to repair
// what a change missing from the change log would leave behind.
const (
	DefaultKeyPairRefresh = 30 * time.Second
	keyPairsFullRefresh   = time.Hour
)

// keyPairsReader keeps the key pairs stored through the admin API for
// every transport of a config at one interval: one reader, like the stored
// clients', not one per transport and profile. A refresh reads the key
// pairs' change log, and the key pairs changed since; a failed one keeps
// the last good reading.
type keyPairsReader struct {
	follower *store.Follower
	current  atomic.Pointer[map[string]*tls.Certificate]
	logger   *zap.Logger
	stop     context.CancelFunc

	mu    sync.Mutex
	users map[*Transport]bool // told of every change
}

// keyPairsReaders holds the readers in use, by config and interval.
var keyPairsReaders = caddy.NewUsagePool()

func newKeyPairsReader(ctx caddy.Context, interval time.Duration, logger *zap.Logger) (*keyPairsReader, error) {
	r := &keyPairsReader{follower: store.New(ctx.Storage(), logger).KeyPairsFollower(keyPairsFullRefresh), logger: logger, users: map[*Transport]bool{}}
	r.current.Store(&map[string]*tls.Certificate{})
	readCtx, cancel := context.WithCancel(ctx)
	r.stop = cancel
	if err := r.read(readCtx); err != nil {
		cancel()
		return nil, fmt.Errorf("reading stored key pairs: %w", err)
	}
	go periodic.Every(readCtx, "stored key pairs", logger, interval, func() {
		if err := r.read(readCtx); err != nil {
			logger.Error("reading stored key pairs; the last reading stays in use", zap.Error(err))
		}
	})
	return r, nil
}

// Destruct stops the reader when no transport uses it any more.
func (r *keyPairsReader) Destruct() error {
	r.stop()
	return nil
}

// get returns the stored key pair name, or nil.
func (r *keyPairsReader) get(name string) *tls.Certificate { return (*r.current.Load())[name] }

// read brings the key pairs up to date and tells the users which changed.
func (r *keyPairsReader) read(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, store.Timeout)
	defer cancel()
	got := map[string]*tls.Certificate{}
	full, changed, err := r.follower.Sync(ctx, false, func(name string, data []byte) {
		got[name] = nil
		if data == nil {
			return
		}
		kp, err := store.DecodeKeyPair(name, data)
		if err != nil {
			r.logger.Warn("skipping corrupt stored key pair", zap.String("keypair", name), zap.Error(err))
			return
		}
		cert := kp.TLSCertificate()
		got[name] = &cert
	})
	if err != nil || !changed {
		return err
	}
	prev := *r.current.Load()
	next := maps.Clone(prev)
	if full {
		next = map[string]*tls.Certificate{}
		for name, cert := range prev {
			switch c, listed := got[name]; {
			case !listed:
				got[name] = nil // gone
			case c == nil:
				// Listed but not read (gone since the listing, or a read
				// answered as "not found"), or not decoding: the last good
				// version stays; a deletion is in the change log.
				got[name] = cert
			}
		}
	}
	var names []string
	for name, cert := range got {
		old := prev[name]
		if cert != nil {
			next[name] = cert
		} else {
			delete(next, name)
		}
		if (old == nil) != (cert == nil) || (old != nil && string(old.Certificate[0]) != string(cert.Certificate[0])) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	r.current.Store(&next)
	r.mu.Lock()
	defer r.mu.Unlock()
	for t := range r.users {
		t.keyPairsChanged(names)
	}
	return nil
}

// keyPairsUse is a transport's use of the stored key pairs' reader.
type keyPairsUse struct {
	once   sync.Once
	reader *keyPairsReader
	key    string
	err    error
}

// storedKeyPairs returns the reader of the stored key pairs of t's config,
// made on first use and shared with the config's other transports of the
// same keypair_refresh; t is told of every change.
func (t *Transport) storedKeyPairs() (*keyPairsReader, error) {
	u := t.keyPairs
	u.once.Do(func() {
		interval := time.Duration(t.KeyPairRefresh)
		if interval <= 0 {
			interval = DefaultKeyPairRefresh
		}
		key := fmt.Sprintf("%p %s", t.ctx.Done(), interval)
		v, _, err := keyPairsReaders.LoadOrNew(key, func() (caddy.Destructor, error) {
			return newKeyPairsReader(t.ctx, interval, t.logger)
		})
		if err != nil {
			u.err = err
			return
		}
		u.reader, u.key = v.(*keyPairsReader), key
		u.reader.mu.Lock()
		u.reader.users[t] = true
		u.reader.mu.Unlock()
	})
	return u.reader, u.err
}

// releaseKeyPairs ends t's use of the stored key pairs' reader.
func (t *Transport) releaseKeyPairs() {
	u := t.keyPairs
	if u == nil || u.reader == nil {
		return
	}
	u.reader.mu.Lock()
	delete(u.reader.users, t)
	u.reader.mu.Unlock()
	_, _ = keyPairsReaders.Delete(u.key)
	u.reader = nil
}

// keyPairsChanged swaps in the stored key pairs named that changed, in the
// profiles presenting them by name: their idle connections, made with the
// old key pair, are closed, and so are the connection pools of identities
// chosen per request from them. A key pair deleted stays in use by the
// profiles that name it until it is stored again.
func (t *Transport) keyPairsChanged(names []string) {
	set := t.profiles.Load()
	if set == nil {
		return
	}
	for _, p := range set.all {
		if p.keyPair == nil || !slices.Contains(names, p.keyPair.name) {
			continue
		}
		cert := p.keyPairReader.get(p.keyPair.name)
		if cert == nil {
			t.logger.Error("stored key pair deleted; the last one read stays in use until it is stored again",
				zap.String("profile", p.name), zap.String("keypair", p.keyPair.name))
			continue
		}
		p.keyPair.current.Store(cert)
		p.defaultRT.CloseIdleConnections()
		t.logger.Info("stored key pair changed", zap.String("profile", p.name), zap.String("keypair", p.keyPair.name),
			zap.String("fingerprint", certcodec.Fingerprint(cert.Certificate[0])))
	}
	t.pools.removeIf(func(k poolKey) bool { return k.storedKeyPair && slices.Contains(names, k.alias) })
	t.trackExpiry(set)
}

// storedKeyPair is a key pair from the storage a profile presents by
// name, kept current.
type storedKeyPair struct {
	name    string
	current atomic.Pointer[tls.Certificate]
}

// presentStoredKeyPair makes out present the stored key pair name, or,
// when name holds placeholders, the one it names in each request.
func presentStoredKeyPair(out *profile, name string, keyPairs func() (*keyPairsReader, error)) error {
	reader, err := keyPairs()
	if err != nil {
		return fmt.Errorf("client_keypair: %w", err)
	}
	out.keyPairReader = reader
	if isTemplate(name) {
		out.keyPairTemplate = name
		return nil
	}
	if err := store.CheckName(name); err != nil {
		return fmt.Errorf("client_keypair: %w", err)
	}
	cert := reader.get(name)
	if cert == nil {
		return fmt.Errorf("client_keypair: key pair %q: %w", name, store.ErrNotFound)
	}
	out.keyPair = &storedKeyPair{name: name}
	out.keyPair.current.Store(cert)
	return nil
}

// getClientCertificate presents the current version of the key pair.
func (s *storedKeyPair) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.current.Load(), nil
}
