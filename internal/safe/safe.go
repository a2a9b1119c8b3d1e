// Package safe turns a panic inside code that reads what operators and
// networks hand us (keystores, profiles files, CRLs, OCSP answers) into an
// error, so that one hostile file or answer cannot end the Caddy process.
package safe

import (
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// ErrPanic is wrapped by the error of a call that panicked.
var ErrPanic = errors.New("internal error (recovered panic)")

// Panics counts recovered panics by where they happened ("decode" or
// "background"); the metrics package registers it in Caddy's registry.
var Panics = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "caddy", Subsystem: "mtls", Name: "panics_recovered_total",
	Help: "Panics recovered in decoders of operator files and network answers, and in background refreshes.",
}, []string{"where"})

// Decode calls fn and returns its results; a panic in fn becomes an error
// that names what was being decoded, and is logged with its stack.
func Decode[T any](what string, fn func() (T, error)) (v T, err error) {
	err = Do(what, func() error {
		var err error
		v, err = fn()
		return err
	})
	if errors.Is(err, ErrPanic) {
		var zero T
		v = zero
	}
	return v, err
}

// Do calls fn and returns its error; a panic in fn becomes an error that
// names what was being decoded, and is logged with its stack.
func Do(what string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			Panics.WithLabelValues("decode").Inc()
			caddy.Log().Named("mtls").Error("recovered a panic while decoding",
				zap.String("what", what), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("decoding %s: %w: %v", what, ErrPanic, r)
		}
	}()
	return fn()
}

// Run calls fn, a background task's step; a panic in fn is logged with its
// stack and counted, and Run returns normally, so the task goes on with the
// last good state it had.
func Run(task string, logger *zap.Logger, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			Panics.WithLabelValues("background").Inc()
			if logger == nil {
				logger = caddy.Log().Named("mtls")
			}
			logger.Error("recovered a panic in a background task; its last good state stays",
				zap.String("task", task), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	fn()
}
