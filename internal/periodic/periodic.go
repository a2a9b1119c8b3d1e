// Package periodic runs the project's background refreshes.
package periodic

import (
	"context"
	"time"
)

// Every calls fn every interval until ctx is done.
func Every(ctx context.Context, interval time.Duration, fn func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			fn()
		}
	}
}
