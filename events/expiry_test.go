package events

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mtls/caddy-mtls/metrics"
)

func TestWarnExpiring(t *testing.T) {
	owner := new(int)
	now := time.Now()
	metrics.SetExpiry(owner, metrics.KindClient, map[string]time.Time{
		"soon":   now.Add(48 * time.Hour),
		"sooner": now.Add(time.Hour),
		"later":  now.Add(90 * 24 * time.Hour),
	})
	defer metrics.ForgetExpiry(owner)
	core, logs := observer.New(zap.WarnLevel)
	if n := WarnExpiring(owner, DefaultExpiryWarning, zap.New(core), nil); n != 2 {
		t.Fatalf("warned about %d certificates, want 2", n)
	}
	entries := logs.All()
	if len(entries) != 2 || entries[0].ContextMap()["name"] != "sooner" || entries[1].ContextMap()["name"] != "soon" {
		t.Fatalf("warnings, soonest first: %v", entries)
	}
}
