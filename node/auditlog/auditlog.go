// Package auditlog keeps a serving node's audit events on disk and ships
// them to the coordinator. Every event is appended (and fsynced) to a JSON
// lines file before the call it records is answered, numbered with a
// sequence that survives restarts; a shipper sends what the coordinator has
// not acknowledged, so an outage of the coordinator loses nothing and a
// retry duplicates nothing (the coordinator stores by node and sequence).
package auditlog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// Files in the log's directory.
const (
	fileEvents = "audit.jsonl"
	fileAcked  = "audit.acked"
)

// maxBatch bounds one shipment.
const maxBatch = 500

// Log is the node's audit log. It is safe for concurrent use.
type Log struct {
	dir string
	log *slog.Logger

	mu struct {
		sync.Mutex
		f      *os.File
		seq    uint64 // last sequence written
		acked  uint64 // last sequence the coordinator stored
		notify chan struct{}
	}
}

// Open opens (creating) the log in dir and recovers its sequence. A torn
// last line (a crash mid-append) is cut off, so the file always holds whole
// events.
func Open(dir string, log *slog.Logger) (*Log, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	l := &Log{dir: dir, log: log}
	path := filepath.Join(dir, fileEvents)
	last, good, err := scanTail(path)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("auditlog: cut torn tail: %w", err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	l.mu.f, l.mu.seq = f, last
	l.mu.notify = make(chan struct{}, 1)
	b, err := os.ReadFile(filepath.Join(dir, fileAcked))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		f.Close()
		return nil, fmt.Errorf("auditlog: %w", err)
	default:
		if l.mu.acked, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			f.Close()
			return nil, fmt.Errorf("auditlog: %s: %w", fileAcked, err)
		}
	}
	return l, nil
}

// scanTail returns the last sequence number in the file and the length of
// its whole-line prefix.
func scanTail(path string) (last uint64, good int64, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("auditlog: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return last, good, nil // a partial line without newline is torn
		}
		if err != nil {
			return 0, 0, fmt.Errorf("auditlog: %w", err)
		}
		var ev api.AuditEvent
		if json.Unmarshal(line, &ev) != nil {
			return last, good, nil // garbage from a torn write: cut here
		}
		last = ev.Seq
		good += int64(len(line))
	}
}

// Record appends an event, giving it the next sequence number, and syncs it
// to disk before returning.
func (l *Log) Record(ev api.AuditEvent) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.f == nil {
		return errors.New("auditlog: closed")
	}
	ev.Seq = l.mu.seq + 1
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("auditlog: encode: %w", err)
	}
	if _, err := l.mu.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("auditlog: append: %w", err)
	}
	if err := l.mu.f.Sync(); err != nil {
		return fmt.Errorf("auditlog: sync: %w", err)
	}
	l.mu.seq = ev.Seq
	select {
	case l.mu.notify <- struct{}{}:
	default:
	}
	return nil
}

// Pending returns up to max events after the acknowledged sequence.
func (l *Log) Pending(max int) ([]api.AuditEvent, error) {
	l.mu.Lock()
	acked, seq := l.mu.acked, l.mu.seq
	l.mu.Unlock()
	if seq <= acked {
		return nil, nil
	}
	return l.Read(func(ev *api.AuditEvent) bool { return ev.Seq > acked }, max)
}

// Read returns up to max events (oldest first) for which keep is true.
func (l *Log) Read(keep func(*api.AuditEvent) bool, max int) ([]api.AuditEvent, error) {
	f, err := os.Open(filepath.Join(l.dir, fileEvents))
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	defer f.Close()
	var out []api.AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && len(out) < max {
		var ev api.AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			break // a line being written right now
		}
		if keep(&ev) {
			out = append(out, ev)
		}
	}
	return out, nil
}

// Ack records that the coordinator stored every event up to seq.
func (l *Log) Ack(seq uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq <= l.mu.acked {
		return nil
	}
	if seq > l.mu.seq {
		return fmt.Errorf("auditlog: coordinator acknowledged seq %d, but only %d were written", seq, l.mu.seq)
	}
	path := filepath.Join(l.dir, fileAcked)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(seq, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("auditlog: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("auditlog: %w", err)
	}
	l.mu.acked = seq
	return nil
}

// Stats reports the last written and acknowledged sequence numbers.
func (l *Log) Stats() (written, acked uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.seq, l.mu.acked
}

// Ship sends pending events with send until ctx ends, waking on every new
// event and retrying failures with backoff. send returns the highest
// sequence the coordinator stored.
func (l *Log) Ship(ctx context.Context, send func(context.Context, []api.AuditEvent) (uint64, error)) {
	retry := time.Second
	for {
		evs, err := l.Pending(maxBatch)
		if err == nil && len(evs) > 0 {
			var stored uint64
			stored, err = send(ctx, evs)
			if err == nil {
				err = l.Ack(stored)
			}
			if err == nil {
				retry = time.Second
				continue // more may be pending
			}
		}
		wait := 30 * time.Second
		if err != nil {
			l.log.Debug("audit shipping failed; retrying", "err", err, "in", retry)
			wait, retry = retry, min(retry*2, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-l.mu.notify:
			if err != nil {
				// Still wait out the backoff; the event is on disk.
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		case <-time.After(wait):
		}
	}
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.f == nil {
		return nil
	}
	err := l.mu.f.Close()
	l.mu.f = nil
	return err
}
