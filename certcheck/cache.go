package certcheck

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Cache is a bounded map of verdicts V, one map a Source: a verdict is
// served until its expiry and only for the generation (of stored clients
// and CRLs) it was made with. When full, it makes room by dropping the
// expired entries among a few arbitrary ones, else one of those, so a miss
// costs the same however large the cache is; room comes from either map in
// proportion to its size, so that a flood on one path cannot crowd out the
// other.
//
// A cache may count its hits and misses (CountWith): a hit is a Get or
// GetBytes that returns a verdict, a miss a Put (a verdict that was not
// there, so was made). A caller that looks under a second key when the
// first finds nothing, and keeps what it makes under one of them, counts
// one hit or one miss per verdict; a verdict it finds but does not use
// (a leaf sent with other intermediates) still counts as a hit.
type Cache[V any] struct {
	mu     sync.RWMutex
	m      [NumSources]map[string]cached[V]
	max    int
	hits   Counter
	misses Counter
}

// Counter counts events; a prometheus.Counter is one.
type Counter interface{ Inc() }

// nopCounter counts nothing, for a cache that is not counted.
type nopCounter struct{}

func (nopCounter) Inc() {}

type cached[V any] struct {
	v       V
	expires time.Time
	gen     uint64
}

// evictionSample is how many entries a full cache looks at to make room.
const evictionSample = 8

// NewCache returns a cache of at most max entries.
func NewCache[V any](max int) *Cache[V] {
	c := &Cache[V]{max: max, hits: nopCounter{}, misses: nopCounter{}}
	for i := range c.m {
		c.m[i] = map[string]cached[V]{}
	}
	return c
}

// CountWith makes the cache count its hits with hits and its misses with
// misses (see Cache); nil counts nothing. Call it before the cache is used.
func (c *Cache[V]) CountWith(hits, misses Counter) {
	c.hits, c.misses = nopCounter{}, nopCounter{}
	if hits != nil {
		c.hits = hits
	}
	if misses != nil {
		c.misses = misses
	}
}

// Get returns the verdict kept under key for src, if it may still be used
// at now with generation gen.
func (c *Cache[V]) Get(src Source, key string, now time.Time, gen uint64) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[src][key]
	c.mu.RUnlock()
	return c.fresh(e, ok, now, gen)
}

// GetBytes is Get without converting (and so copying) the key.
func (c *Cache[V]) GetBytes(src Source, key []byte, now time.Time, gen uint64) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[src][string(key)]
	c.mu.RUnlock()
	return c.fresh(e, ok, now, gen)
}

// fresh returns e's verdict if it was found and may be used at now with
// generation gen, counting a hit.
func (c *Cache[V]) fresh(e cached[V], found bool, now time.Time, gen uint64) (V, bool) {
	if !found || !now.Before(e.expires) || e.gen != gen {
		var zero V
		return zero, false
	}
	c.hits.Inc()
	return e.v, true
}

// Put keeps v under key for src until expires, for generation gen, and
// counts a miss.
func (c *Cache[V]) Put(src Source, key string, v V, expires time.Time, gen uint64) {
	c.misses.Inc()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.m[src]
	if _, ok := m[key]; !ok {
		total := 0
		for _, mm := range c.m {
			total += len(mm)
		}
		if total >= c.max {
			pick := rand.IntN(total)
			for _, victims := range c.m {
				if pick < len(victims) {
					makeRoom(victims)
					break
				}
				pick -= len(victims)
			}
		}
	}
	m[key] = cached[V]{v: v, expires: expires, gen: gen}
}

// Len returns the number of entries for src.
func (c *Cache[V]) Len(src Source) int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m[src])
}

// Size returns the number of entries, of both sources.
func (c *Cache[V]) Size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, m := range c.m {
		n += len(m)
	}
	return n
}

// Keys calls fn with each key kept for src (for tests and diagnostics).
func (c *Cache[V]) Keys(src Source, fn func(key string, v V)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for k, e := range c.m[src] {
		fn(k, e.v)
	}
}

// makeRoom drops the expired entries among the first evictionSample of m
// (in Go's random map order), else the last of them.
func makeRoom[V any](m map[string]cached[V]) {
	now := time.Now()
	seen, dropped := 0, 0
	var victim string
	for k, e := range m {
		if !now.Before(e.expires) {
			delete(m, k)
			dropped++
		}
		victim = k
		if seen++; seen == evictionSample {
			break
		}
	}
	if dropped == 0 {
		delete(m, victim)
	}
}
