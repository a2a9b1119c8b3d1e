package handler

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
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
	// How often the stored clients are brought up to date; a client added,
	// changed or removed on any instance is in force here within this
	// time. A refresh reads the storage's change log (one small entry when
	// nothing changed) and the clients changed since. The handlers of a
	// config with the same interval share one reader. Default: `30s`.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// How often every stored client is read again, to repair what a change
	// missing from the change log (a write cut short, an instance of an
	// older version) would leave behind. Default: `1h`.
	FullRefresh caddy.Duration `json:"full_refresh,omitempty"`

	// Trust only the stored clients of these groups (given to each client
	// through the admin API): two routes can trust two lists of clients
	// from one storage. Each is a name like an alias. Default: none (every
	// stored client is trusted).
	Groups []string `json:"groups,omitempty"`
}

// DefaultStorageRefresh is how often stored clients are brought up to date
// by default; DefaultStorageFullRefresh how often they are all read again.
const (
	DefaultStorageRefresh     = 30 * time.Second
	DefaultStorageFullRefresh = time.Hour
)

// fullReadTimeout bounds a reading of every stored client.
const fullReadTimeout = 2 * time.Minute

// storedClients is the stored clients as of one revision of their change
// log; it is not changed once in force. gen changes with the content, and
// verdicts of another generation are not reused.
type storedClients struct {
	byAlias       map[string]*storedClient
	byFingerprint map[[sha256.Size]byte]*Client            // every certificate of every client
	byGroup       map[string]map[[sha256.Size]byte]*Client // group -> the certificates of its clients
	gen           uint64
}

// storedClient is what is kept of one stored client: no certificate, only
// their fingerprints, since a stored client is matched byte for byte.
type storedClient struct {
	client   *Client
	groups   []string
	fps      [][sha256.Size]byte
	notAfter time.Time // of its newest certificate
}

func (c *storedClient) equal(o *storedClient) bool {
	return c.client.Alias == o.client.Alias && c.client.Tier == o.client.Tier &&
		slices.Equal(c.groups, o.groups) && slices.Equal(c.fps, o.fps) && c.notAfter.Equal(o.notAfter)
}

// clientsReader keeps the stored clients of one config at one interval
// for every handler that trusts them, so that a config with many routes
// reads its storage once an interval, not once a route. A failed reading
// keeps the last good one; until the first succeeds, none is trusted.
type clientsReader struct {
	follower   *store.Follower // only read's goroutine uses it
	current    atomic.Pointer[storedClients]
	handoffKey string
	logger     *zap.Logger
	stop       context.CancelFunc
	done       <-chan struct{} // closed once stopped

	mu    sync.Mutex
	users map[*Handler]bool // told of every change, for their expiry metrics
}

// clientsReaders holds the readers in use, by clientsReaderKey.
var clientsReaders = caddy.NewUsagePool()

// handoffs keeps, by storage, the last reading of the stored clients and
// the revision it is of, so that the reader of a config loaded next starts
// from it and reads what changed since, not every client again: a reload
// of a config trusting 100,000 stored clients does not read them all, and
// the old config serves until the new one is up.
var handoffs sync.Map // storage key -> *handoff

type handoff struct {
	follower store.FollowerState
	clients  *storedClients
}

// storageKey names a storage for handoffs, or is "" for one that cannot be
// told apart from others (no String method).
func storageKey(storage certmagic.Storage) string {
	if s, ok := storage.(fmt.Stringer); ok {
		return fmt.Sprintf("%T %s", storage, s)
	}
	return ""
}

// clientsReaderKey names the reader of the config whose context is ctx at
// interval (and fullEvery), or returns "" when the context has no end of its own (then the
// handler gets a reader of its own). The config, not its storage, is the
// key: configs without a storage option all share Caddy's default storage,
// and a new config must have a reader with its own logger and lifetime.
func clientsReaderKey(ctx context.Context, interval, fullEvery time.Duration) string {
	done := ctx.Done()
	if done == nil {
		return ""
	}
	return fmt.Sprintf("%p %s %s", done, interval, fullEvery)
}

// newClientsReader reads the stored clients (or what changed since the
// last reading of the same storage, handed off by a former config) and
// then brings them up to date at every interval, until it is stopped or
// ctx (its config's) ends.
func newClientsReader(ctx context.Context, storage certmagic.Storage, interval, fullEvery time.Duration, logger *zap.Logger) *clientsReader {
	st := store.New(storage, logger)
	r := &clientsReader{follower: st.ClientsFollower(fullEvery), handoffKey: storageKey(storage), logger: logger, users: map[*Handler]bool{}}
	r.current.Store(&storedClients{}) // none until read: fail closed
	handedOff := false
	if v, ok := handoffs.Load(r.handoffKey); ok && r.handoffKey != "" {
		h := v.(*handoff)
		r.follower = st.ClientsFollowerFrom(h.follower, fullEvery)
		r.current.Store(h.clients)
		handedOff = true
	}
	ctx, r.stop = context.WithCancel(ctx)
	r.done = ctx.Done()
	err := r.read(ctx)
	if err != nil && handedOff {
		// The reading handed off is trusted only once this storage's
		// change log is seen to follow on from it: a storage module may
		// name two storages alike. Start from nothing instead.
		r.follower = st.ClientsFollower(fullEvery)
		r.current.Store(&storedClients{})
		err = r.read(ctx)
	}
	if err != nil {
		// The storage may be down: the config still loads, and the
		// stored clients are refused until they can be read.
		logger.Error("reading stored clients; the last reading stays in force (none if there was none)", zap.Error(err))
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

// read brings the stored clients up to date: every one of them at the
// first reading and once every full_refresh, else those the change log
// names. What it read is put in force only when whole.
func (r *clientsReader) read(ctx context.Context) error {
	timeout := store.Timeout
	if r.follower.FullDue() {
		timeout = fullReadTimeout
	}
	readCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	prev := r.current.Load()
	got := map[string]*storedClient{} // nil: deleted, or corrupt
	start := time.Now()
	full, changed, err := r.follower.Sync(readCtx, false, func(alias string, data []byte) {
		got[alias] = nil
		if data == nil {
			return
		}
		c, err := store.DecodeClient(alias, data)
		if err != nil {
			r.logger.Warn("skipping corrupt stored client", zap.String("alias", alias), zap.Error(err))
			return
		}
		got[alias] = compact(c)
	})
	if err != nil {
		return err
	}
	var next *storedClients
	switch {
	case full:
		// Listed but not read (gone since the listing, or a read that
		// failed and was answered as "not found"), or not decoding: the
		// last good version stays. A deletion is in the change log, and
		// the next refresh applies it.
		for alias, c := range got {
			if c == nil {
				if p := prev.byAlias[alias]; p != nil {
					got[alias] = p
				} else {
					delete(got, alias)
				}
			}
		}
		next = r.replaceAll(prev, got)
	case changed:
		next = r.apply(prev, got)
	}
	if next != nil {
		next.gen = prev.gen + 1
		r.current.Store(next)
		if prev.byAlias != nil {
			r.logger.Info("stored clients changed", zap.Int("clients", len(next.byAlias)), zap.Int("read", len(got)),
				zap.Bool("full_read", full), zap.Duration("took", time.Since(start)))
		} else {
			r.logger.Debug("stored clients read", zap.Int("clients", len(next.byAlias)), zap.Duration("took", time.Since(start)))
		}
		r.showExpiry(next)
	} else {
		next = prev
	}
	// Handed off only with a change log to check it against: a reading of
	// a storage without one could not be told from another storage's.
	if state := r.follower.State(); r.handoffKey != "" && state.At != (store.Revision{}) {
		handoffs.Store(r.handoffKey, &handoff{follower: state, clients: next})
	}
	return nil
}

// compact keeps of a stored client what the handler needs.
func compact(c *store.Client) *storedClient {
	out := &storedClient{client: &Client{Alias: c.Alias, Tier: c.Tier}, groups: c.Groups, notAfter: c.Cert().NotAfter}
	for _, cert := range c.Certs() {
		out.fps = append(out.fps, sha256.Sum256(cert.Raw))
	}
	return out
}

// replaceAll returns the stored clients of a full reading, or nil when
// they are what prev holds.
func (r *clientsReader) replaceAll(prev *storedClients, byAlias map[string]*storedClient) *storedClients {
	if prev.byAlias != nil && len(prev.byAlias) == len(byAlias) {
		same := true
		for alias, c := range byAlias {
			if p := prev.byAlias[alias]; p == nil || !p.equal(c) {
				same = false
				break
			}
		}
		if same {
			return nil
		}
	}
	next := &storedClients{
		byAlias:       byAlias,
		byFingerprint: make(map[[sha256.Size]byte]*Client, len(byAlias)),
		byGroup:       map[string]map[[sha256.Size]byte]*Client{},
	}
	aliases := slices.Sorted(maps.Keys(byAlias)) // the first alias of a certificate stored twice wins
	for _, alias := range aliases {
		r.add(next, byAlias[alias], nil)
	}
	return next
}

// apply returns prev with the clients changed (nil: deleted), or nil
// when nothing changed.
func (r *clientsReader) apply(prev *storedClients, changed map[string]*storedClient) *storedClients {
	next := &storedClients{
		byAlias:       maps.Clone(prev.byAlias),
		byFingerprint: maps.Clone(prev.byFingerprint),
		byGroup:       maps.Clone(prev.byGroup),
	}
	if next.byAlias == nil {
		next.byAlias = map[string]*storedClient{}
		next.byFingerprint = map[[sha256.Size]byte]*Client{}
		next.byGroup = map[string]map[[sha256.Size]byte]*Client{}
	}
	cloned := map[string]bool{} // groups whose map is next's own
	same := true
	for _, alias := range slices.Sorted(maps.Keys(changed)) {
		c, old := changed[alias], next.byAlias[alias]
		if (c == nil && old == nil) || (c != nil && old != nil && old.equal(c)) {
			continue
		}
		same = false
		if old != nil {
			for _, fp := range old.fps {
				if next.byFingerprint[fp] == old.client {
					delete(next.byFingerprint, fp)
				}
				for _, g := range old.groups {
					if next.byGroup[g][fp] == old.client {
						groupMap(next, g, cloned)
						delete(next.byGroup[g], fp)
					}
				}
			}
			delete(next.byAlias, alias)
		}
		if c != nil {
			next.byAlias[alias] = c
			r.add(next, c, cloned)
		}
	}
	if same {
		return nil
	}
	return next
}

// add puts c's certificates in next; a certificate held by another alias
// already stays that one's. cloned tells which group maps next owns (nil:
// all of them).
func (r *clientsReader) add(next *storedClients, c *storedClient, cloned map[string]bool) {
	for _, fp := range c.fps {
		if other, dup := next.byFingerprint[fp]; dup && other != c.client {
			r.logger.Warn("a stored certificate is there under two aliases; the first is used",
				zap.String("alias", other.Alias), zap.String("other_alias", c.client.Alias))
			continue
		}
		next.byFingerprint[fp] = c.client
		for _, g := range c.groups {
			groupMap(next, g, cloned)[fp] = c.client
		}
	}
}

// groupMap returns next's map of group g, made or copied so that next owns
// it (cloned: the groups already copied; nil when next owns them all).
func groupMap(next *storedClients, g string, cloned map[string]bool) map[[sha256.Size]byte]*Client {
	m := next.byGroup[g]
	switch {
	case m == nil:
		m = map[[sha256.Size]byte]*Client{}
	case cloned != nil && !cloned[g]:
		m = maps.Clone(m)
	default:
		return m
	}
	next.byGroup[g] = m
	if cloned != nil {
		cloned[g] = true
	}
	return m
}

// showExpiry tells the reader's users of a change, for their expiry
// metrics. Under the lock: a handler released is not shown again (its
// metrics are forgotten after release).
func (r *clientsReader) showExpiry(sc *storedClients) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for h := range r.users {
		h.showClientExpiry(sc)
	}
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
	fullEvery := DefaultStorageFullRefresh
	if h.ClientsFromStorage != nil && h.ClientsFromStorage.FullRefresh > 0 {
		fullEvery = time.Duration(h.ClientsFromStorage.FullRefresh)
	}
	key := clientsReaderKey(ctx, interval, fullEvery)
	if key == "" {
		h.clients = newClientsReader(ctx, storage, interval, fullEvery, h.logger)
	} else {
		v, _, err := clientsReaders.LoadOrNew(key, func() (caddy.Destructor, error) {
			return newClientsReader(ctx, storage, interval, fullEvery, h.logger), nil
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
	var stored []*storedClient
	for _, c := range sc.byAlias {
		if h.trustsGroups(c.groups) {
			stored = append(stored, c)
		}
	}
	if len(stored) > maxStoredExpirySeries {
		slices.SortFunc(stored, func(a, b *storedClient) int { return a.notAfter.Compare(b.notAfter) })
		stored = stored[:maxStoredExpirySeries]
	}
	clientExpiry := make(map[string]time.Time, len(h.pinnedExpiry)+len(stored))
	for _, c := range stored {
		clientExpiry[c.client.Alias] = c.notAfter
	}
	for alias, t := range h.pinnedExpiry {
		clientExpiry[alias] = t
	}
	metrics.SetExpiry(h, metrics.KindClient, clientExpiry)
}

// maxStoredExpirySeries bounds the expiry series a handler shows of stored
// clients: those expiring first. A storage of 100,000 clients does not make
// 100,000 series.
const maxStoredExpirySeries = 1000

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
