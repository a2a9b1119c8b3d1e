package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/caddy-mtls/caddy-mtls/internal/testpeer"
)

// proc is a started gateway, load balancer or backend.
type proc struct {
	cmd   *exec.Cmd
	pids  func() []int
	admin int // Caddy's admin port, 0 for nginx
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// command runs name with args, on the given CPUs when cpus is not empty
// (taskset execs the program, so the process keeps taskset's pid).
func command(cpus, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if cpus != "" {
		cmd = exec.Command("taskset", append([]string{"-c", cpus, name}, args...)...)
	}
	// Stopped with this program, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return cmd
}

// freePort returns a loopback port that was free a moment ago.
func freePort() int {
	port, err := testpeer.FreePort()
	if err != nil {
		panic(err)
	}
	return port
}

// waitPort waits up to 20 s for a listener on the loopback port.
func waitPort(port int) error {
	return testpeer.WaitListening(fmt.Sprintf("127.0.0.1:%d", port), 20*time.Second, nil)
}

// startNginx starts nginx with workers worker processes on cpus.
func startNginx(dir, name, cpus string, workers int, httpBody string, port int) (*proc, error) {
	pdir := filepath.Join(dir, name)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	conf := testpeer.NginxConfig(pdir, workers, httpBody)
	confPath := filepath.Join(pdir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := command(cpus, *nginxBin, "-p", pdir, "-c", confPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, pids: func() []int { return append([]int{cmd.Process.Pid}, children(cmd.Process.Pid)...) }}
	if err := waitPort(port); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// startCaddy starts Caddy on cpus with caddyfile, whose global options get
// an admin endpoint on a free port.
func startCaddy(dir, name, cpus, caddyfile string, port int) (*proc, error) {
	pdir := filepath.Join(dir, name)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	admin := freePort()
	cfg := filepath.Join(pdir, "Caddyfile")
	global := fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n\tauto_https off\n}\n", admin)
	if err := os.WriteFile(cfg, []byte(global+caddyfile), 0o644); err != nil {
		return nil, err
	}
	cmd := command(cpus, *caddyBin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+pdir, "XDG_DATA_HOME="+pdir, "XDG_CONFIG_HOME="+pdir)
	logf, err := os.Create(filepath.Join(pdir, "caddy.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close() // the child has its own
	if err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, pids: func() []int { return []int{cmd.Process.Pid} }, admin: admin}
	if err := waitPort(port); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s: %w (see %s)", name, err, logf.Name())
	}
	return p, nil
}

// children lists the child processes of pid (nginx's workers).
func children(pid int) []int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// cpuTicks sums user and system clock ticks of pids.
func cpuTicks(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		total += utime + stime
	}
	return total
}

// cpuNanos is the CPU time pid has used so far, in nanoseconds (where
// /proc/<pid>/stat counts 10 ms ticks): its process CPU clock, which also
// counts threads that have ended.
func cpuNanos(pid int) (int64, error) {
	var ts unix.Timespec
	// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) of the kernel's posix-timers.h
	if err := unix.ClockGettime(int32(^pid<<3|2), &ts); err != nil {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, err)
	}
	return ts.Nano(), nil
}

// ioCalls sums the read and write system calls (syscr, syscw of
// /proc/<pid>/io) of pids.
func ioCalls(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			name, value, _ := strings.Cut(line, ": ")
			if name == "syscr" || name == "syscw" {
				n, _ := strconv.ParseInt(value, 10, 64)
				total += n
			}
		}
	}
	return total
}

// statusKB sums a kB field of /proc/<pid>/status (VmHWM: peak RSS, VmRSS:
// current RSS) over pids.
func statusKB(pids []int, field string) int64 {
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, field+":"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				total += kb
			}
		}
	}
	return total
}

// memStats is what the load comparison reads of a Go program's memory
// statistics.
type memStats struct {
	HeapInuse uint64 // bytes of heap in use
	Mallocs   uint64 // allocations since the start
}

// readMemStats reads Caddy's Go memory statistics from its admin
// /debug/vars.
func readMemStats(admin int) (memStats, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/vars", admin))
	if err != nil {
		return memStats{}, err
	}
	defer resp.Body.Close()
	var vars struct {
		Memstats memStats `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return memStats{}, fmt.Errorf("decoding /debug/vars: %w", err)
	}
	return vars.Memstats, nil
}
