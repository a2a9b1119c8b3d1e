//go:build unix

package bounded

import (
	"os"
	"syscall"
)

// Opening a FIFO for reading blocks until a writer comes, unless
// non-blocking; for a regular file the flag changes nothing.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK
