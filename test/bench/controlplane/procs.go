package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procUsage is what /proc says of one process.
type procUsage struct {
	CPU time.Duration // user + system time so far
	RSS uint64        // resident now, bytes (VmRSS)
	HWM uint64        // peak resident, bytes (VmHWM)
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat; the
// kernel fixes it at 100 for userspace on every architecture Go supports
// on Linux.
const clockTick = 10 * time.Millisecond

// readUsage reads /proc/PID/stat and /proc/PID/status.
func readUsage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("proc: %w", err)
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis start at field 3, so utime (14) and stime (15)
	// are the 12th and 13th of them.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, fmt.Errorf("proc: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("proc: /proc/%d/stat: %d fields", pid, len(f))
	}
	for _, s := range f[11:13] {
		ticks, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return u, fmt.Errorf("proc: /proc/%d/stat: %w", pid, err)
		}
		u.CPU += time.Duration(ticks) * clockTick
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("proc: %w", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return u, fmt.Errorf("proc: /proc/%d/status %s: %w", pid, key, err)
		}
		if key == "VmRSS" {
			u.RSS = kb << 10
		} else {
			u.HWM = kb << 10
		}
	}
	return u, nil
}

// coordProc is the coordinator under test: the real binary, its own process.
type coordProc struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// initCoordinator runs `mcpmesh coordinator init`.
func initCoordinator(bin, data string, env []string) error {
	cmd := exec.Command(bin, "coordinator", "init", "--data", data, "--trust-domain", "bench.internal")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("coordinator init: %w: %s", err, out)
	}
	return nil
}

var listeningURL = regexp.MustCompile(`msg="coordinator listening" url=(https://\S+)`)

// startCoordinator runs `mcpmesh coordinator run` on an ephemeral loopback
// port, its log in logPath, and waits (15 s at most) for the URL it
// announces.
func startCoordinator(bin, data, logPath string, env []string) (*coordProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("coordinator log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, "coordinator", "run", "--data", data, "--listen", "127.0.0.1:0")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("coordinator run: %w", err)
	}
	c := &coordProc{cmd: cmd, exited: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		if m := listeningURL.FindSubmatch(b); m != nil {
			c.url = string(m[1])
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("coordinator exited before listening (%v): %s", c.err, tail(b, 2000))
		case <-time.After(20 * time.Millisecond):
		}
	}
	c.stop()
	return nil, errors.New("coordinator did not announce its URL within 15 s")
}

// pid is the coordinator's process id.
func (c *coordProc) pid() int { return c.cmd.Process.Pid }

// stop asks the coordinator to shut down and kills it after 10 s.
func (c *coordProc) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// clientProc is one client process and the pipes to it.
type clientProc struct {
	name    string
	nodes   int
	cmd     *exec.Cmd
	in      io.WriteCloser
	replies chan reply // closed when its stdout ends
	exited  chan struct{}
}

// startClient starts one client process; cmd has its arguments set.
func startClient(name string, nodes int, cmd *exec.Cmd, logPath string) (*clientProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log: %w", name, err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// A pipe of our own, not StdoutPipe: Wait must not close the read
	// end under the reader while a last reply is in flight.
	out, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("%s: start: %w", name, err)
	}
	c := &clientProc{name: name, nodes: nodes, cmd: cmd, in: in, replies: make(chan reply, 16), exited: make(chan struct{})}
	go func() {
		defer close(c.replies)
		defer out.Close()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var r reply
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				r = reply{Err: fmt.Sprintf("bad reply %q: %v", sc.Bytes(), err)}
			}
			c.replies <- r
		}
	}()
	go func() { _ = cmd.Wait(); close(c.exited) }()
	return c, nil
}

func (c *clientProc) send(req request) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("%s: send %s: %w", c.name, req.Op, err)
	}
	return nil
}

func (c *clientProc) recv(op string, timeout time.Duration) (reply, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r, ok := <-c.replies:
		switch {
		case !ok:
			return r, fmt.Errorf("%s: %s: the client exited", c.name, op)
		case r.Err != "":
			return r, fmt.Errorf("%s: %s: %s", c.name, op, r.Err)
		}
		return r, nil
	case <-t.C:
		return reply{}, fmt.Errorf("%s: %s: no reply within %s", c.name, op, timeout)
	}
}

// callAll sends req to every client at once, then collects the replies.
func callAll(cs []*clientProc, req request, timeout time.Duration) ([]reply, error) {
	for _, c := range cs {
		if err := c.send(req); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(timeout)
	out := make([]reply, len(cs))
	var errs []error
	for i, c := range cs {
		r, err := c.recv(req.Op, max(time.Until(deadline), time.Millisecond))
		if err != nil {
			errs = append(errs, err)
		}
		out[i] = r
	}
	return out, errors.Join(errs...)
}

// stop asks the client to quit and kills it if it has not within 15 s.
func (c *clientProc) stop() {
	if c.send(request{Op: opQuit}) == nil {
		_, _ = c.recv(opQuit, 15*time.Second)
	}
	c.in.Close()
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
