// Package bounded reads files that configuration names, up to a size and
// only if they are regular files, so that a wrong path (a device, a huge
// log, a named pipe nobody writes to) can neither fill the memory nor hang
// a config load or a watcher.
package bounded

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrNotRegular is wrapped by the error for a path that is not a regular
// file.
var ErrNotRegular = errors.New("not a regular file")

// ReadFile reads the file at path, or fails if it is not a regular file or
// is larger than max bytes. It opens without blocking, so a FIFO put in the
// file's place is refused at once rather than waited on.
func ReadFile(path string, max int64) ([]byte, error) {
	// Stat first for a clear reason (a socket cannot even be opened), then
	// again on what was opened, in case the file changed in between.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := regular(fi); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, openFlags, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := regular(fi); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}

// CheckRegular fails unless path (after symbolic links) is a regular file
// of at most max bytes: for files that other code (Caddy's trust pool
// modules) will read whole, which would block on a FIFO.
func CheckRegular(path string, max int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := regular(fi); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if fi.Size() > max {
		return fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return nil
}

func regular(fi fs.FileInfo) error {
	if fi.Mode().IsRegular() {
		return nil
	}
	kind := "special file"
	switch t := fi.Mode().Type(); {
	case t&fs.ModeDir != 0:
		kind = "directory"
	case t&fs.ModeNamedPipe != 0:
		kind = "named pipe (FIFO)"
	case t&fs.ModeSocket != 0:
		kind = "socket"
	case t&fs.ModeDevice != 0:
		kind = "device"
	}
	return fmt.Errorf("%w: a %s", ErrNotRegular, kind)
}
