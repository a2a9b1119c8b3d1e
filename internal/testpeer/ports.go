package testpeer

import (
	"fmt"
	"net"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitListening waits until addr accepts TCP connections, for at most
// timeout; it gives up at once when exited (the process that should listen
// has ended; nil: never) is closed.
func WaitListening(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("process exited before %s was listening", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %v", addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
