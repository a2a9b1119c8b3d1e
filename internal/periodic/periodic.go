// Package periodic runs the project's background refreshes.
package periodic

import (
	"context"
	"time"

	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"go.uber.org/zap"
)

// Every calls fn every interval until ctx is done. A panic in fn is
// recovered, logged under task with logger (Caddy's default logger if nil)
// and counted; the next tick runs fn again.
func Every(ctx context.Context, task string, logger *zap.Logger, interval time.Duration, fn func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			safe.Run(task, logger, fn)
		}
	}
}
