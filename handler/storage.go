package handler

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/periodic"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// StorageClients configures trusting the clients stored through the admin
// API (admin.api.mtls) in Caddy's storage, shared by every instance that
// shares the storage.
type StorageClients struct {
	// How often the stored clients are read again; a client added or
	// removed on any instance is in force here within this time. Default:
	// `30s`.
	Refresh caddy.Duration `json:"refresh,omitempty"`
}

// DefaultStorageRefresh is how often stored clients are read by default.
const DefaultStorageRefresh = 30 * time.Second

// storageTimeout bounds one reading of the stored clients: a storage that
// hangs must not stall the refresh for good.
const storageTimeout = 30 * time.Second

// storedClients is one reading of the stored clients. gen changes with the
// content, and verdicts of another generation are not reused.
type storedClients struct {
	byFingerprint map[[sha256.Size]byte]*Client
	digest        [sha256.Size]byte
	gen           uint64
}

// generation returns the generation of what verdicts depend on besides
// the configuration: the stored clients and the CRLs in force. Both only
// grow, so their sum changes whenever either does.
func (h *Handler) generation() uint64 {
	gen := h.revocation.Generation()
	if sc := h.stored.Load(); sc != nil {
		gen += sc.gen
	}
	return gen
}

// storedClient returns the stored client with the fingerprint, if any.
func (h *Handler) storedClient(fp [sha256.Size]byte) *Client {
	if sc := h.stored.Load(); sc != nil {
		return sc.byFingerprint[fp]
	}
	return nil
}

// loadStoredClients reads the stored clients and puts them in force if
// they changed.
func (h *Handler) loadStoredClients(ctx caddy.Context, st *store.Store) error {
	readCtx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	clients, err := st.Clients(readCtx)
	if err != nil {
		return err
	}
	next := &storedClients{byFingerprint: make(map[[sha256.Size]byte]*Client, len(clients))}
	d := sha256.New()
	for _, c := range clients {
		fp := sha256.Sum256(c.Cert().Raw)
		if other, dup := next.byFingerprint[fp]; dup {
			h.logger.Warn("a stored certificate is there under two aliases; the first is used",
				zap.String("alias", other.Alias), zap.String("other_alias", c.Alias))
			continue
		}
		fmt.Fprintf(d, "%s\x00%s\x00%x\n", c.Alias, c.Tier, fp)
		next.byFingerprint[fp] = &Client{Alias: c.Alias, Tier: c.Tier}
	}
	copy(next.digest[:], d.Sum(nil))
	clientExpiry := make(map[string]time.Time, len(h.pinnedExpiry)+len(clients))
	for alias, t := range h.pinnedExpiry {
		clientExpiry[alias] = t
	}
	for _, c := range clients {
		if _, pinned := clientExpiry[c.Alias]; !pinned {
			clientExpiry[c.Alias] = c.Cert().NotAfter
		}
	}
	metrics.SetExpiry(h, metrics.KindClient, clientExpiry)
	prev := h.stored.Load()
	if prev != nil && prev.byFingerprint != nil && prev.digest == next.digest {
		return nil
	}
	if prev != nil {
		next.gen = prev.gen + 1
	}
	h.stored.Store(next)
	if prev != nil && prev.byFingerprint != nil {
		h.logger.Info("stored clients changed", zap.Int("clients", len(clients)))
	}
	return nil
}

// watchStoredClients reads the stored clients at every interval until the
// config is unloaded; a failed reading keeps the last good one.
func (h *Handler) watchStoredClients(ctx caddy.Context, st *store.Store, interval time.Duration) {
	periodic.Every(ctx, interval, func() {
		if err := h.loadStoredClients(ctx, st); err != nil {
			h.logger.Error("reading stored clients; the last reading stays in force", zap.Error(err))
		}
	})
}
