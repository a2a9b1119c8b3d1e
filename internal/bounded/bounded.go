// Package bounded reads files that configuration names, up to a size, so
// that a wrong path (a device, a huge log) cannot fill the memory.
package bounded

import (
	"fmt"
	"io"
	"os"
)

// ReadFile reads the file at path, or fails if it is larger than max bytes.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}
