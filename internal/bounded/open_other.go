//go:build !unix

package bounded

import "os"

const openFlags = os.O_RDONLY
