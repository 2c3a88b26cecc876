package platform

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// ListListeners returns every listening TCP socket (IPv4 and IPv6) of the
// current network namespace, read from /proc/net/tcp and /proc/net/tcp6,
// with the process holding each when /proc lets us see it. Processes whose
// file descriptors cannot be read (another user's, without privilege) are
// skipped, and their sockets keep PID 0.
//
// The current namespace is the calling thread's (/proc/thread-self/net),
// which is where the caller's sockets live. /proc/net names the main
// thread's instead, and that can differ: a goroutine that locked the main
// thread and entered another namespace leaves the thread there for good.
func ListListeners() ([]Listener, error) {
	runtime.LockOSThread() // read both tables in one thread's namespace
	defer runtime.UnlockOSThread()
	return listListeners(netDir(), "/proc")
}

// netDir is the socket tables of the calling thread's namespace; its
// caller holds the thread (runtime.LockOSThread).
func netDir() string {
	const threadSelf = "/proc/thread-self/net"
	if _, err := os.Stat(threadSelf); err != nil {
		return "/proc/self/net" // kernels before 3.17
	}
	return threadSelf
}

// listListeners is ListListeners reading the socket tables from netDir and
// the processes from the proc file system mounted at proc, so tests can
// hand it a made-up tree.
func listListeners(netDir, proc string) ([]Listener, error) {
	all, err := listenSockets(netDir)
	if err != nil {
		return nil, fmt.Errorf("platform: list listeners: %w", err)
	}
	setListenerOwners(proc, all)
	return all, nil
}

// listenSockets reads the listening TCP sockets, IPv4 and IPv6, from the
// socket tables in netDir, without their processes.
func listenSockets(netDir string) ([]Listener, error) {
	var all []Listener
	for _, name := range []string{"tcp", "tcp6"} {
		path := filepath.Join(netDir, name)
		data, err := os.ReadFile(path)
		if name == "tcp6" && errors.Is(err, fs.ErrNotExist) {
			continue // the kernel runs without IPv6
		}
		if err != nil {
			return nil, err
		}
		ls, err := parseProcNetTCP(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		all = append(all, ls...)
	}
	return all, nil
}

// tcpListen is the socket state LISTEN in /proc/net/tcp (TCP_LISTEN).
const tcpListen = 0x0A

// parseProcNetTCP reads the listening sockets out of the contents of
// /proc/net/tcp or /proc/net/tcp6. Lines in other states are skipped; a
// listening line that cannot be read is an error, since it means the format
// is not the one this parser knows. It is pure, so it can be fuzzed.
func parseProcNetTCP(data []byte) ([]Listener, error) {
	var ls []Listener
	n := 0
	for line := range bytes.Lines(data) {
		n++
		f := bytes.Fields(line)
		if len(f) == 0 || string(f[0]) == "sl" {
			continue // blank, or the header
		}
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		if len(f) < 10 {
			return nil, fmt.Errorf("line %d: %d fields, want at least 10", n, len(f))
		}
		st, err := strconv.ParseUint(string(f[3]), 16, 8)
		if err != nil {
			return nil, fmt.Errorf("line %d: state %q: %w", n, f[3], err)
		}
		if st != tcpListen {
			continue
		}
		addr, err := parseProcNetAddr(string(f[1]))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		uid, err := strconv.ParseUint(string(f[7]), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("line %d: uid %q: %w", n, f[7], err)
		}
		inode, err := strconv.ParseUint(string(f[9]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: inode %q: %w", n, f[9], err)
		}
		ls = append(ls, Listener{Addr: addr, Inode: inode, UID: int(uid)})
	}
	return ls, nil
}

// parseProcNetAddr reads an address as /proc/net/tcp prints it: the IP as
// 32-bit words in hex (one for IPv4, four for IPv6), each printed as a
// number in the host's byte order, then a colon and the port in hex.
func parseProcNetAddr(s string) (netip.AddrPort, error) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil || len(hexPort) != 4 {
		return netip.AddrPort{}, fmt.Errorf("address %q: bad port", s)
	}
	if len(hexIP) != 8 && len(hexIP) != 32 {
		return netip.AddrPort{}, fmt.Errorf("address %q: %d hex digits, want 8 or 32", s, len(hexIP))
	}
	var b [16]byte
	for i := 0; i*8 < len(hexIP); i++ {
		w, err := strconv.ParseUint(hexIP[i*8:i*8+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: bad hex", s)
		}
		binary.NativeEndian.PutUint32(b[i*4:], uint32(w))
	}
	if len(hexIP) == 8 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(port)), nil
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(port)), nil
}

// setListenerOwners fills in PID and Process of each listener from the
// socket links in proc/*/fd. A socket several processes hold goes to the
// lowest PID. Processes that vanish or cannot be read are skipped.
func setListenerOwners(proc string, ls []Listener) {
	owner := make(map[uint64]int, len(ls))
	for _, l := range ls {
		if l.Inode != 0 {
			owner[l.Inode] = 0
		}
	}
	if len(owner) == 0 {
		return
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(proc, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			inode, ok := socketInode(link)
			if !ok {
				continue
			}
			if cur, wanted := owner[inode]; wanted && (cur == 0 || pid < cur) {
				owner[inode] = pid
			}
		}
	}
	comms := make(map[int]string)
	for i := range ls {
		pid := owner[ls[i].Inode]
		if pid == 0 {
			continue
		}
		comm, ok := comms[pid]
		if !ok {
			b, _ := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "comm"))
			comm = strings.TrimSuffix(string(b), "\n")
			comms[pid] = comm
		}
		ls[i].PID, ls[i].Process = pid, comm
	}
}

// socketInode reads the inode out of a file descriptor's link, which for
// a socket reads "socket:[INODE]".
func socketInode(link string) (uint64, bool) {
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	inode, err := strconv.ParseUint(s, 10, 64)
	return inode, err == nil
}
