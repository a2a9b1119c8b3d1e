package handler

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
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
	// removed on any instance is in force here within this time. The
	// handlers of a config with the same interval share one reading.
	// Default: `30s`.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// Trust only the stored clients of these groups (given to each client
	// through the admin API): two routes can trust two lists of clients
	// from one storage. Each is a name like an alias. Default: none (every
	// stored client is trusted).
	Groups []string `json:"groups,omitempty"`
}

// DefaultStorageRefresh is how often stored clients are read by default.
const DefaultStorageRefresh = 30 * time.Second

// storedClients is one reading of the stored clients. gen changes with the
// content, and verdicts of another generation are not reused.
type storedClients struct {
	byFingerprint map[[sha256.Size]byte]*Client            // every certificate of every client
	byGroup       map[string]map[[sha256.Size]byte]*Client // group -> the certificates of its clients
	notAfter      map[string]time.Time                     // alias -> its newest certificate's not after
	groups        map[string][]string                      // alias -> its groups
	digest        [sha256.Size]byte
	gen           uint64
}

// clientsReader reads the stored clients of one config at one interval
// for every handler that trusts them, so that a config with many routes
// reads its storage once an interval, not once a route. A failed reading
// keeps the last good one; until the first succeeds, none is trusted.
type clientsReader struct {
	st      *store.Store
	current atomic.Pointer[storedClients]
	logger  *zap.Logger
	stop    context.CancelFunc
	done    <-chan struct{} // closed once stopped

	mu    sync.Mutex
	users map[*Handler]bool // told of every change, for their expiry metrics
}

// clientsReaders holds the readers in use, by clientsReaderKey.
var clientsReaders = caddy.NewUsagePool()

// clientsReaderKey names the reader of the config whose context is ctx at
// interval, or returns "" when the context has no end of its own (then the
// handler gets a reader of its own). The config, not its storage, is the
// key: configs without a storage option all share Caddy's default storage,
// and a new config must read the stored clients anew, with its own logger.
func clientsReaderKey(ctx context.Context, interval time.Duration) string {
	done := ctx.Done()
	if done == nil {
		return ""
	}
	return fmt.Sprintf("%p %s", done, interval)
}

// newClientsReader reads the stored clients once and then at every
// interval, until it is stopped or ctx (its config's) ends.
func newClientsReader(ctx context.Context, storage certmagic.Storage, interval time.Duration, logger *zap.Logger) *clientsReader {
	r := &clientsReader{st: store.New(storage, logger), logger: logger, users: map[*Handler]bool{}}
	r.current.Store(&storedClients{}) // none until read: fail closed
	ctx, r.stop = context.WithCancel(ctx)
	r.done = ctx.Done()
	if err := r.read(ctx); err != nil {
		// The storage may be down: the config still loads, and the
		// stored clients are refused until they can be read.
		logger.Error("reading stored clients; none are trusted until they can be read", zap.Error(err))
	}
	go periodic.Every(ctx, "stored clients", logger, interval, func() {
		if err := r.read(ctx); err != nil {
			logger.Error("reading stored clients; the last reading stays in force", zap.Error(err))
		}
	})
	return r
}

// Destruct stops the reader when no handler uses it any more.
func (r *clientsReader) Destruct() error {
	r.stop()
	return nil
}

// read reads the stored clients and puts them in force if they changed.
func (r *clientsReader) read(ctx context.Context) error {
	readCtx, cancel := context.WithTimeout(ctx, store.Timeout)
	defer cancel()
	clients, err := r.st.Clients(readCtx)
	if err != nil {
		return err
	}
	next := &storedClients{
		byFingerprint: make(map[[sha256.Size]byte]*Client, len(clients)),
		byGroup:       map[string]map[[sha256.Size]byte]*Client{},
		notAfter:      make(map[string]time.Time, len(clients)),
		groups:        make(map[string][]string, len(clients)),
	}
	d := sha256.New()
	for _, c := range clients {
		client := &Client{Alias: c.Alias, Tier: c.Tier}
		fmt.Fprintf(d, "%s\x00%s\x00%q", c.Alias, c.Tier, c.Groups)
		for _, cert := range c.Certs() {
			fp := sha256.Sum256(cert.Raw)
			if other, dup := next.byFingerprint[fp]; dup {
				r.logger.Warn("a stored certificate is there under two aliases; the first is used",
					zap.String("alias", other.Alias), zap.String("other_alias", c.Alias))
				continue
			}
			fmt.Fprintf(d, "\x00%x", fp)
			next.byFingerprint[fp] = client
			for _, g := range c.Groups {
				if next.byGroup[g] == nil {
					next.byGroup[g] = map[[sha256.Size]byte]*Client{}
				}
				next.byGroup[g][fp] = client
			}
		}
		d.Write([]byte{'\n'})
		next.notAfter[c.Alias] = c.Cert().NotAfter
		next.groups[c.Alias] = c.Groups
	}
	copy(next.digest[:], d.Sum(nil))
	prev := r.current.Load()
	if prev.byFingerprint != nil && prev.digest == next.digest {
		return nil
	}
	next.gen = prev.gen + 1
	r.current.Store(next)
	if prev.byFingerprint != nil {
		r.logger.Info("stored clients changed", zap.Int("clients", len(next.byFingerprint)))
	}
	// Under the lock: a handler released is not shown again (its metrics
	// are forgotten after release).
	r.mu.Lock()
	defer r.mu.Unlock()
	for h := range r.users {
		h.showClientExpiry(next)
	}
	return nil
}

// use makes h a user of the reader: told of every change from now on.
func (r *clientsReader) use(h *Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.users[h] = true
	h.showClientExpiry(r.current.Load())
}

// release ends h's use of the reader.
func (r *clientsReader) release(h *Handler) {
	r.mu.Lock()
	delete(r.users, h)
	r.mu.Unlock()
}

// useStoredClients gives h the reader of its config's stored clients at
// interval, shared with the config's other handlers of that interval.
func (h *Handler) useStoredClients(ctx context.Context, storage certmagic.Storage, interval time.Duration) error {
	key := clientsReaderKey(ctx, interval)
	if key == "" {
		h.clients = newClientsReader(ctx, storage, interval, h.logger)
	} else {
		v, _, err := clientsReaders.LoadOrNew(key, func() (caddy.Destructor, error) {
			return newClientsReader(ctx, storage, interval, h.logger), nil
		})
		if err != nil {
			return err
		}
		h.clients, h.clientsKey = v.(*clientsReader), key
	}
	h.clients.use(h)
	return nil
}

// releaseStoredClients ends h's use of its reader; the last user stops it.
// h.clients stays: requests of an unloaded config may still be draining,
// and they are judged by the last reading.
func (h *Handler) releaseStoredClients() {
	if h.clients == nil || h.clientsReleased {
		return
	}
	h.clientsReleased = true
	h.clients.release(h)
	if h.clientsKey == "" {
		_ = h.clients.Destruct()
	} else {
		_, _ = clientsReaders.Delete(h.clientsKey)
	}
}

// showClientExpiry shows the expiry of h's pinned clients and of the stored
// ones in sc that h trusts (a pinned client's alias names the pinned one).
func (h *Handler) showClientExpiry(sc *storedClients) {
	clientExpiry := make(map[string]time.Time, len(h.pinnedExpiry)+len(sc.notAfter))
	for alias, t := range sc.notAfter {
		if h.trustsGroups(sc.groups[alias]) {
			clientExpiry[alias] = t
		}
	}
	for alias, t := range h.pinnedExpiry {
		clientExpiry[alias] = t
	}
	metrics.SetExpiry(h, metrics.KindClient, clientExpiry)
}

// generation returns the generation of what verdicts depend on besides
// the configuration: the stored clients and the CRLs in force. Both only
// grow, so their sum changes whenever either does.
func (h *Handler) generation() uint64 {
	gen := h.revocation.Generation()
	if h.clients != nil {
		gen += h.clients.current.Load().gen
	}
	return gen
}

// storedClient returns the stored client with the fingerprint that h
// trusts, if any: with groups, one of a group of h's.
func (h *Handler) storedClient(fp [sha256.Size]byte) *Client {
	if h.clients == nil {
		return nil
	}
	sc := h.clients.current.Load()
	groups := h.storageGroups()
	if len(groups) == 0 {
		return sc.byFingerprint[fp]
	}
	for _, g := range groups {
		if c := sc.byGroup[g][fp]; c != nil {
			return c
		}
	}
	return nil
}

// storageGroups returns the groups of stored clients h trusts; none: all.
func (h *Handler) storageGroups() []string {
	if h.ClientsFromStorage == nil {
		return nil
	}
	return h.ClientsFromStorage.Groups
}

// trustsGroups tells whether h trusts a stored client of the groups.
func (h *Handler) trustsGroups(groups []string) bool {
	if len(h.storageGroups()) == 0 {
		return true
	}
	for _, want := range h.storageGroups() {
		for _, g := range groups {
			if g == want {
				return true
			}
		}
	}
	return false
}
