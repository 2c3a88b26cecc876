package auditlog_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// TestFailedAppendIsCutBackOff fills the file up part way through an
// append, as a full disk does (here by the process's file size limit,
// which makes the kernel write part of the bytes and then refuse), and
// checks what a node's operator and the coordinator would see: the batch
// is refused whole, no torn line is left in the log, and every event
// written after the disk has room again is kept, shipped and read back
// after a restart. Without the cut, the torn line would stop shipping
// there and the next Open would drop everything after it.
func TestFailedAppendIsCutBackOff(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	l := openWith(t, dir, "a", "b", "c")
	before := fileSize(t, path)

	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &saved); err != nil {
		t.Fatal(err)
	}
	limit := saved
	limit.Cur = uint64(before) + 40 // room for part of one event
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	_, err := l.Append(ev("batch-1"), ev("batch-2"))
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &saved); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("an append past the file size limit succeeded")
	}
	if got := fileSize(t, path); got != before {
		t.Fatalf("a failed append left %d bytes in the file", got-before)
	}
	if written, _ := l.Stats(); written != 3 {
		t.Fatalf("a failed append advanced the sequence to %d", written)
	}

	last, err := l.Append(ev("d"), ev("e"))
	if err != nil {
		t.Fatalf("append once there is room again: %v", err)
	}
	if last != 5 {
		t.Fatalf("last sequence %d, want 5", last)
	}
	if err := l.Sync(last); err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "b", "c", "d", "e"}
	pending, err := l.Pending(100)
	if err != nil {
		t.Fatal(err)
	}
	checkTools(t, "shipped", pending, want)
	l.Close()
	_, all := reopen(t, dir)
	checkTools(t, "after restart", all, want)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func checkTools(t *testing.T, what string, evs []api.AuditEvent, want []string) {
	t.Helper()
	if len(evs) != len(want) {
		t.Fatalf("%s: %d events, want %d: %+v", what, len(evs), len(want), evs)
	}
	for i, e := range evs {
		if e.Tool != want[i] || e.Seq != uint64(i+1) {
			t.Fatalf("%s: event %d is %s #%d, want %s #%d", what, i, e.Tool, e.Seq, want[i], i+1)
		}
	}
}
