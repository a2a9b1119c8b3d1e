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
type Cache[V any] struct {
	mu  sync.RWMutex
	m   [NumSources]map[string]cached[V]
	max int
}

type cached[V any] struct {
	v       V
	expires time.Time
	gen     uint64
}

// evictionSample is how many entries a full cache looks at to make room.
const evictionSample = 8

// NewCache returns a cache of at most max entries.
func NewCache[V any](max int) *Cache[V] {
	c := &Cache[V]{max: max}
	for i := range c.m {
		c.m[i] = map[string]cached[V]{}
	}
	return c
}

// Get returns the verdict kept under key for src, if it may still be used
// at now with generation gen.
func (c *Cache[V]) Get(src Source, key string, now time.Time, gen uint64) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[src][key]
	c.mu.RUnlock()
	return e.fresh(ok, now, gen)
}

// GetBytes is Get without converting (and so copying) the key.
func (c *Cache[V]) GetBytes(src Source, key []byte, now time.Time, gen uint64) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[src][string(key)]
	c.mu.RUnlock()
	return e.fresh(ok, now, gen)
}

func (e cached[V]) fresh(found bool, now time.Time, gen uint64) (V, bool) {
	if !found || !now.Before(e.expires) || e.gen != gen {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Put keeps v under key for src until expires, for generation gen.
func (c *Cache[V]) Put(src Source, key string, v V, expires time.Time, gen uint64) {
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
