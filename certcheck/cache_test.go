package certcheck

import (
	"strconv"
	"testing"
	"time"
)

func TestCacheBoundAndExpiry(t *testing.T) {
	c := NewCache[int](4)
	now := time.Now()
	for i := range 100 {
		// TLS and header entries share the bound, whichever comes.
		c.Put(Source(i/3%2), strconv.Itoa(i), i, now.Add(time.Hour), 0)
		if n := c.Len(SourceTLS) + c.Len(SourceHeader); n > 4 {
			t.Fatalf("cache grew to %d entries, bound 4", n)
		}
	}
	// A flood on one path leaves room for the other.
	c = NewCache[int](100)
	for i := range 1000 {
		c.Put(SourceTLS, "tls"+strconv.Itoa(i), i, now.Add(time.Hour), 0)
	}
	for i := range 1000 {
		c.Put(SourceHeader, "hdr"+strconv.Itoa(i), i, now.Add(time.Hour), 0)
	}
	if n := c.Len(SourceHeader); n < 50 {
		t.Fatalf("after a TLS flood, header verdicts got %d of 100 places", n)
	}
	k := "key"
	c.Put(SourceHeader, k, 7, now.Add(time.Second), 0)
	if v, ok := c.Get(SourceHeader, k, now, 0); !ok || v != 7 {
		t.Fatal("fresh entry not found")
	}
	if v, ok := c.GetBytes(SourceHeader, []byte(k), now, 0); !ok || v != 7 {
		t.Fatal("fresh entry not found by bytes")
	}
	if _, ok := c.Get(SourceTLS, k, now, 0); ok {
		t.Fatal("header entry served for the same TLS key")
	}
	if _, ok := c.Get(SourceHeader, k, now.Add(time.Second), 0); ok {
		t.Fatal("entry served at its expiry")
	}
	if _, ok := c.Get(SourceHeader, k, now, 1); ok {
		t.Fatal("entry of another generation of stored clients served")
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		name := r.String()
		if name == "" || seen[name] || name == "unknown_reason" {
			t.Fatalf("reason %d: name %q", r, name)
		}
		seen[name] = true
	}
	// The names DESIGN.md gives, in logs, metrics and `caddy mtls inspect`.
	for _, name := range []string{"no_cert", "untrusted", "expired", "not_yet_valid", "ca_certificate", "eku", "key_usage", "revoked", "revocation_unknown", "bad_header", "untrusted_source"} {
		if !seen[name] {
			t.Errorf("no reason named %s", name)
		}
	}
	if OK.String() != "" || Reason(200).String() != "unknown_reason" {
		t.Fatal("OK or out-of-range names")
	}
}

type count int

func (c *count) Inc() { *c++ }

// TestCacheCounts checks that a cache counts a hit for each verdict it
// serves and a miss for each one put in, and tells its size.
func TestCacheCounts(t *testing.T) {
	c := NewCache[int](10)
	now := time.Now()
	c.Put(SourceTLS, "uncounted", 0, now.Add(time.Hour), 0) // before CountWith
	var hits, misses count
	c.CountWith(&hits, &misses)
	if _, ok := c.Get(SourceTLS, "a", now, 0); ok {
		t.Fatal("found a")
	}
	c.Put(SourceTLS, "a", 1, now.Add(time.Hour), 0)
	c.Put(SourceHeader, "b", 2, now.Add(time.Hour), 0)
	c.Get(SourceTLS, "a", now, 0)
	c.GetBytes(SourceHeader, []byte("b"), now, 0)
	c.Get(SourceTLS, "a", now, 1)                // another generation: nothing served
	c.Get(SourceTLS, "a", now.Add(time.Hour), 0) // expired
	if hits != 2 || misses != 2 {
		t.Fatalf("%d hits and %d misses, want 2 and 2", hits, misses)
	}
	if n := c.Size(); n != 3 {
		t.Fatalf("size %d, want 3", n)
	}
	c.CountWith(nil, nil)
	c.Get(SourceTLS, "a", now, 0)
	if hits != 2 {
		t.Fatal("counted after CountWith(nil, nil)")
	}
}
