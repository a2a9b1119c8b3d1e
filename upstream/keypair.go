package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// storedKeyPair is a key pair from the storage, kept current.
type storedKeyPair struct {
	name    string
	current atomic.Pointer[tls.Certificate]
}

func loadStoredKeyPair(ctx caddy.Context, name string) (*storedKeyPair, error) {
	if err := store.CheckName(name); err != nil {
		return nil, err
	}
	readCtx, cancel := context.WithTimeout(ctx, store.Timeout)
	defer cancel()
	kp, err := store.New(ctx.Storage(), ctx.Logger()).KeyPair(readCtx, name)
	if err != nil {
		return nil, fmt.Errorf("client_keypair: %w", err)
	}
	s := &storedKeyPair{name: name}
	cert := kp.TLSCertificate()
	s.current.Store(&cert)
	return s, nil
}

// getClientCertificate presents the current version of the key pair.
func (s *storedKeyPair) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.current.Load(), nil
}

// DefaultKeyPairRefresh is how often stored key pairs are read again.
const DefaultKeyPairRefresh = 30 * time.Second

// watchKeyPairs re-reads the stored key pairs of the profiles in force at
// every interval: a key pair replaced through the admin API of any instance
// is presented on new connections within that time.
func (t *Transport) watchKeyPairs(interval time.Duration) {
	st := store.New(t.ctx.Storage(), t.logger)
	periodic.Every(t.ctx, "stored key pairs", t.logger, interval, func() { t.refreshKeyPairs(st) })
}

// refreshKeyPairs reads the stored key pairs of the profiles in force and
// swaps in those that changed.
func (t *Transport) refreshKeyPairs(st *store.Store) {
	for _, p := range t.profiles.Load().all {
		if p.keyPair == nil {
			continue
		}
		readCtx, cancel := context.WithTimeout(t.ctx, store.Timeout)
		kp, err := st.KeyPair(readCtx, p.keyPair.name)
		cancel()
		if err != nil {
			t.logger.Error("reading stored key pair; the last one read stays in use",
				zap.String("profile", p.name), zap.String("keypair", p.keyPair.name), zap.Error(err))
			continue
		}
		cert := kp.TLSCertificate()
		if old := p.keyPair.current.Load(); old != nil && string(old.Certificate[0]) == string(cert.Certificate[0]) {
			continue
		}
		p.keyPair.current.Store(&cert)
		t.trackExpiry(t.profiles.Load())
		// Pooled connections were made with the old key pair: close
		// the idle ones, so it stops being presented.
		p.defaultRT.CloseIdleConnections()
		t.logger.Info("stored key pair changed", zap.String("profile", p.name), zap.String("keypair", p.keyPair.name),
			zap.String("fingerprint", certcodec.Fingerprint(cert.Certificate[0])))
	}
}
