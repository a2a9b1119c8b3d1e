package revocation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// DefaultCRLTimeout bounds one read of a distribution point's CRL.
const DefaultCRLTimeout = 2 * time.Second

// DefaultCRLMaxSize bounds a distribution point's CRL.
const DefaultCRLMaxSize = 10 << 20

// DefaultCRLCacheSize is how many distribution points' CRLs are kept.
const DefaultCRLCacheSize = 1000

// dpMinRefresh is the least time between two refreshes of one CRL, and
// dpRetry the time after a failed or refused refresh before the next one
// (or the reload interval, if shorter).
const (
	dpMinRefresh = time.Second
	dpRetry      = 30 * time.Second
)

// dpRefreshers bounds the refreshes made at once.
const dpRefreshers = 8

// dpKey names a distribution point's CRL: its URL, and the issuer of the
// certificates that name it, whose signature the CRL must bear.
type dpKey struct {
	url    string
	issuer [sha256.Size]byte
}

// dpEntry is one distribution point's CRL, with what refreshes it.
type dpEntry struct {
	key      dpKey
	issuer   *x509.Certificate
	state    atomic.Pointer[dpState]
	lastUsed atomic.Int64 // unix nanoseconds, for eviction
}

// dpState is what is known of a distribution point's CRL: either a
// verified CRL, refreshed at due, or (crl nil) that none could be had,
// not to be asked again before retry.
type dpState struct {
	crl   *x509.RevocationList
	due   time.Time
	retry time.Time
}

// dpCache keeps distribution points' CRLs, at most max of them (the least
// recently used goes).
type dpCache struct {
	mu   sync.RWMutex
	m    map[dpKey]*dpEntry
	max  int
	wake chan struct{} // a CRL was added: the refresher looks at its due time
}

func (dc *dpCache) get(key dpKey) *dpEntry {
	dc.mu.RLock()
	e := dc.m[key]
	dc.mu.RUnlock()
	return e
}

// put stores st as key's state, adding an entry (and evicting the least
// recently used one when full) if key has none.
func (dc *dpCache) put(key dpKey, issuer *x509.Certificate, st *dpState, now time.Time) {
	dc.mu.Lock()
	e := dc.m[key]
	if e == nil {
		if len(dc.m) >= dc.max {
			var lru *dpEntry
			for _, o := range dc.m {
				if lru == nil || o.lastUsed.Load() < lru.lastUsed.Load() {
					lru = o
				}
			}
			delete(dc.m, lru.key)
		}
		e = &dpEntry{key: key, issuer: issuer}
		e.lastUsed.Store(now.UnixNano())
		dc.m[key] = e
	}
	e.state.Store(st)
	dc.mu.Unlock()
	if st.crl != nil {
		select {
		case dc.wake <- struct{}{}:
		default:
		}
	}
}

func (dc *dpCache) len() int {
	dc.mu.RLock()
	defer dc.mu.RUnlock()
	return len(dc.m)
}

// each calls fn with every entry, the cache's lock held for reading.
func (dc *dpCache) each(fn func(*dpEntry)) {
	dc.mu.RLock()
	defer dc.mu.RUnlock()
	for _, e := range dc.m {
		fn(e)
	}
}

// held returns the entries that hold a CRL and, unless all, are due at now;
// and the earliest due time of the others.
func (dc *dpCache) held(now time.Time, all bool) (due []*dpEntry, next time.Time) {
	dc.mu.RLock()
	defer dc.mu.RUnlock()
	for _, e := range dc.m {
		st := e.state.Load()
		if st.crl == nil {
			continue
		}
		if all || !now.Before(st.due) {
			due = append(due, e)
		} else if next.IsZero() || st.due.Before(next) {
			next = st.due
		}
	}
	return due, next
}

// dpURL returns the first http or https CRL distribution point of cert.
func dpURL(cert *x509.Certificate) string {
	for _, u := range cert.CRLDistributionPoints {
		if strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://") {
			return u
		}
	}
	return ""
}

// checkDP checks cert against the CRL of its distribution point. ok is
// false when the certificate names none or its CRL cannot be had (then
// until, if not zero, is when it is asked again).
func (c *Checker) checkDP(cert, issuer *x509.Certificate, now time.Time) (crl *x509.RevocationList, until time.Time, ok bool) {
	url := dpURL(cert)
	if url == "" {
		return nil, time.Time{}, false
	}
	key := dpKey{url: url, issuer: sha256.Sum256(issuer.Raw)}
	var st *dpState
	if e := c.dp.get(key); e != nil {
		e.lastUsed.Store(now.UnixNano())
		st = e.state.Load()
	}
	if st == nil || (st.crl == nil && !now.Before(st.retry)) {
		st = c.firstDP(key, issuer, now)
	}
	if st.crl == nil {
		return nil, st.retry, false
	}
	if !st.crl.NextUpdate.IsZero() && now.After(st.crl.NextUpdate) {
		c.warnOnce("stale CRL from "+sourceName(url), zap.String("crl", sourceName(url)),
			zap.String("issuer", issuer.Subject.String()), zap.Time("next_update", st.crl.NextUpdate))
		return nil, time.Time{}, false
	}
	return st.crl, st.crl.NextUpdate, true
}

// firstDP reads a distribution point's CRL on the request path, once for
// everyone asking meanwhile, within CRLTimeout. A CRL that cannot be had
// is not asked for again before UnknownCache has passed.
func (c *Checker) firstDP(key dpKey, issuer *x509.Certificate, now time.Time) *dpState {
	v, _, _ := c.dpFlights.Do(key.url+"\x00"+string(key.issuer[:]), func() (any, error) {
		if e := c.dp.get(key); e != nil { // a read that just ended
			if st := e.state.Load(); st.crl != nil || now.Before(st.retry) {
				return st, nil
			}
		}
		crl, err := c.fetchDP(c.ctx, key.url, issuer, now)
		if err != nil {
			metrics.CRLUpdate(sourceName(key.url), metrics.CRLError)
			retry := c.unknownCache()
			c.logger.Warn("revocation status unknown: reading the CRL of a distribution point",
				zap.String("crl", sourceName(key.url)), zap.String("issuer", issuer.Subject.String()),
				zap.Duration("retry_in", retry), zap.Error(err))
			st := &dpState{retry: now.Add(retry)}
			c.dp.put(key, issuer, st, now)
			return st, nil
		}
		metrics.CRLUpdate(sourceName(key.url), metrics.CRLOK)
		st := &dpState{crl: crl, due: dpDue(now, crl, c.reloadInterval())}
		c.dp.put(key, issuer, st, now)
		c.gen.Add(1)
		return st, nil
	})
	return v.(*dpState)
}

// refreshDP reads again the distribution points' CRLs that are due at now
// (all of them if all), a few at once. One that cannot be read, or whose
// new CRL is older than the one in force, keeps the one in force.
func (c *Checker) refreshDP(ctx context.Context, now time.Time, all bool) {
	due, _ := c.dp.held(now, all)
	var g errgroup.Group
	g.SetLimit(dpRefreshers)
	for _, e := range due {
		g.Go(func() error {
			safe.Run("CRL distribution point refresh", c.logger, func() { c.refreshEntry(ctx, e, now) })
			return nil
		})
	}
	_ = g.Wait()
}

func (c *Checker) refreshEntry(ctx context.Context, e *dpEntry, now time.Time) {
	name := sourceName(e.key.url)
	_, _, _ = c.dpFlights.Do(e.key.url+"\x00"+string(e.key.issuer[:]), func() (any, error) {
		prev := e.state.Load()
		if prev.crl == nil {
			return prev, nil
		}
		crl, err := c.fetchDP(ctx, e.key.url, e.issuer, time.Now())
		if err != nil {
			metrics.CRLUpdate(name, metrics.CRLError)
			c.logger.Error("reading CRL; the last one read stays", zap.String("crl", name), zap.Error(err))
			next := &dpState{crl: prev.crl, due: now.Add(c.dpRetryIn())}
			e.state.Store(next)
			return next, nil
		}
		if olderCRL(crl, prev.crl) {
			metrics.CRLUpdate(name, metrics.CRLOlder)
			c.logger.Warn("CRL older than the one in force; refused, the one in force stays",
				zap.String("crl", name), zap.String("issuer", crl.Issuer.String()),
				zap.String("number", crlNumber(crl)), zap.Time("this_update", crl.ThisUpdate),
				zap.String("number_in_force", crlNumber(prev.crl)), zap.Time("this_update_in_force", prev.crl.ThisUpdate))
			next := &dpState{crl: prev.crl, due: now.Add(c.dpRetryIn())}
			e.state.Store(next)
			return next, nil
		}
		metrics.CRLUpdate(name, metrics.CRLOK)
		next := &dpState{crl: crl, due: dpDue(now, crl, c.reloadInterval())}
		e.state.Store(next)
		if !bytes.Equal(crl.Raw, prev.crl.Raw) {
			c.gen.Add(1)
			c.logger.Info("CRL reloaded", zap.String("crl", name))
		}
		return next, nil
	})
}

// watchDP refreshes the distribution points' CRLs when they are due, until
// ctx is done.
func (c *Checker) watchDP(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		_, next := c.dp.held(time.Now(), false)
		wait := time.Until(next)
		if next.IsZero() {
			wait = c.reloadInterval()
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-c.dp.wake:
		case <-timer.C:
			safe.Run("CRL distribution point refresh", c.logger, func() { c.refreshDP(ctx, time.Now(), false) })
		}
	}
}

// dpDue returns when a CRL read at now is to be read again: after the
// reload interval, or, if sooner, when nine tenths of the time left until
// its nextUpdate have passed; never sooner than dpMinRefresh.
func dpDue(now time.Time, crl *x509.RevocationList, reload time.Duration) time.Time {
	d := reload
	if !crl.NextUpdate.IsZero() {
		if left := crl.NextUpdate.Sub(now) * 9 / 10; left < d {
			d = left
		}
	}
	return now.Add(max(d, dpMinRefresh))
}

// fetchDP reads a distribution point's CRL within CRLTimeout and checks
// it: at most CRLMaxSize bytes, issued by issuer (name and signature), not
// past its nextUpdate at now.
func (c *Checker) fetchDP(ctx context.Context, url string, issuer *x509.Certificate, now time.Time) (*x509.RevocationList, error) {
	timeout := time.Duration(c.cfg.CRLTimeout)
	if timeout <= 0 {
		timeout = DefaultCRLTimeout
	}
	maxSize := c.cfg.CRLMaxSize
	if maxSize <= 0 {
		maxSize = DefaultCRLMaxSize
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	data, err := c.get(ctx, url, maxSize)
	if err != nil {
		return nil, err
	}
	crl, err := safe.Decode("CRL "+sourceName(url), func() (*x509.RevocationList, error) { return parseCRL(data) })
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return nil, fmt.Errorf("a CRL of %s, not of %s", crl.Issuer, issuer.Subject)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("signature does not verify with the issuer's certificate: %w", err)
	}
	c.learnIssuer(issuer)
	if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
		return nil, errStaleCRL
	}
	return crl, nil
}

// errStaleCRL is the error of a CRL read past its nextUpdate.
var errStaleCRL = errors.New("past its nextUpdate")

func (c *Checker) unknownCache() time.Duration {
	if d := time.Duration(c.cfg.UnknownCache); d > 0 {
		return d
	}
	return DefaultUnknownCache
}

// dpRetryIn is the time after a failed or refused refresh before the next.
func (c *Checker) dpRetryIn() time.Duration {
	return max(min(dpRetry, c.reloadInterval()), dpMinRefresh)
}

func (c *Checker) reloadInterval() time.Duration {
	if d := time.Duration(c.cfg.Reload); d > 0 {
		return d
	}
	return time.Hour
}
