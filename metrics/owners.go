package metrics

import "sync"

// owners holds what each owner (a module instance) has shown, for a
// collector that reads it when scraped, until the owner forgets it.
type owners[T any] struct {
	mu sync.Mutex
	m  map[any]T
}

// set shows v for owner, replacing what it showed.
func (o *owners[T]) set(owner any, v T) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[any]T{}
	}
	o.m[owner] = v
}

// forget stops showing owner's.
func (o *owners[T]) forget(owner any) {
	o.mu.Lock()
	delete(o.m, owner)
	o.mu.Unlock()
}

// values returns what every owner shows, copied: the caller reads it
// without the lock (a value's own functions may take other locks).
func (o *owners[T]) values() []T {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]T, 0, len(o.m))
	for _, v := range o.m {
		out = append(out, v)
	}
	return out
}
