// Package auditlog keeps a serving node's audit events on disk and ships
// them to the coordinator. Every event is appended to a JSON lines file
// before the call it records is forwarded, and fsynced within the node's
// span (`mcpmesh up --audit-fsync`; with zero, before that call is
// answered), numbered with a sequence that survives restarts; a shipper
// sends what the coordinator has not acknowledged, so an outage of the
// coordinator loses nothing and a retry duplicates nothing (the
// coordinator stores by node and sequence). Once the acknowledged part of
// the file passes a size (DefaultCompactOver), the file is rewritten
// without the oldest acknowledged events, keeping DefaultKeepAcked of them
// for whoever looks on the host: a busy node's log does not fill its disk,
// and nothing the coordinator has not stored is ever dropped.
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
	"math"
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
	fileNext   = "audit.jsonl.next" // a compaction being written
)

// The file is compacted when its acknowledged part passes
// DefaultCompactOver, down to DefaultKeepAcked of acknowledged events
// (SetCompaction changes both).
const (
	DefaultCompactOver = 256 << 20
	DefaultKeepAcked   = 16 << 20
)

// maxBatch bounds one shipment; shipDelay lets events that arrive together
// travel together.
const (
	maxBatch  = 500
	shipDelay = 100 * time.Millisecond
)

// DefaultSyncEvery is how long an event waits for its fsync unless the
// node is told otherwise (`mcpmesh up --audit-fsync`).
const DefaultSyncEvery = 100 * time.Millisecond

// Log is the node's audit log. It is safe for concurrent use.
type Log struct {
	dir string
	log *slog.Logger

	// The flusher goroutine fsyncs whenever events were appended since its
	// last fsync, so that every event appended while one runs shares the
	// next (group commit), and a Sync waits for the flusher rather than
	// starting an fsync of its own. kick wakes it; stop and stopped end it.
	kick      chan struct{}
	stop      chan struct{}
	stopped   chan struct{}
	syncEvery time.Duration

	compactOver, keepAcked int64 // SetCompaction
	// warnShipAfter is how long shipping fails before Ship warns
	// (warnShipFailuresAfter; tests shorten it).
	warnShipAfter time.Duration

	sync struct {
		sync.Mutex
		synced uint64        // last sequence known to be on disk
		failed uint64        // last sequence of a failed fsync ...
		err    error         // ... and its error
		done   chan struct{} // closed (and replaced) after every fsync
	}

	mu struct {
		sync.Mutex
		f      *os.File
		size   int64  // length of the file: where the next event goes
		broken error  // set when a failed append left bytes that could not be cut off
		seq    uint64 // last sequence written
		acked  uint64 // last sequence the coordinator stored
		notify chan struct{}
		// ackedOff is the file offset just past event acked, so shipping
		// reads only what is pending instead of the whole file each time;
		// ends maps the sequence of each event last handed out by Pending
		// to the offset just past it.
		ackedOff int64
		ends     map[uint64]int64
		// gen counts compactions: offsets read under one generation mean
		// nothing in the next. retired holds the files compactions
		// replaced, closed by the flusher once it no longer syncs them.
		gen     uint64
		retired []*os.File
	}
}

// Open opens (creating) the log in dir and recovers its sequence. A torn
// last line (a crash mid-append) is cut off, so the file always holds whole
// events.
//
// syncEvery is how long an appended event may wait for its fsync: the
// flusher gathers the events of that span into one fsync, and Sync waits
// for it. Zero fsyncs as soon as events are pending (an fsync per answer
// under light load; group commit under heavy load).
func Open(dir string, log *slog.Logger, syncEvery time.Duration) (*Log, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	l := &Log{dir: dir, log: log, syncEvery: syncEvery, compactOver: DefaultCompactOver, keepAcked: DefaultKeepAcked, warnShipAfter: warnShipFailuresAfter}
	// A compaction that a crash cut short left only its unfinished copy.
	if err := os.Remove(filepath.Join(dir, fileNext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
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
	l.mu.f, l.mu.size, l.mu.seq = f, good, last
	l.mu.notify = make(chan struct{}, 1)
	l.sync.synced = last // recovered events were read back from the file
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
	if l.mu.acked > l.mu.seq {
		// The coordinator acknowledged events the file no longer holds:
		// it was deleted or replaced by an older copy. Numbering the
		// next events from the file would give them sequences already
		// acknowledged, and they would never be shipped; they follow the
		// acknowledged ones instead.
		log.Warn("the audit file holds fewer events than the coordinator acknowledged (deleted, or an older copy?); numbering continues after them",
			"file_last_seq", l.mu.seq, "acknowledged", l.mu.acked)
		l.mu.seq = l.mu.acked
	}
	// Find where the unacknowledged events start, once.
	acked := l.mu.acked
	_, offs, err := l.readFrom(0, func(ev *api.AuditEvent) bool { return ev.Seq <= acked }, math.MaxInt)
	if err != nil {
		f.Close()
		return nil, err
	}
	if len(offs) > 0 {
		l.mu.ackedOff = offs[len(offs)-1]
	}
	l.kick, l.stop, l.stopped = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
	l.sync.done = make(chan struct{})
	go l.flusher()
	return l, nil
}

// flusher fsyncs the file whenever it is kicked and events are pending,
// until Close.
func (l *Log) flusher() {
	defer close(l.stopped)
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			return
		}
		if l.syncEvery > 0 {
			// Gather what arrives in the span into this fsync.
			t := time.NewTimer(l.syncEvery)
			select {
			case <-t.C:
			case <-l.stop:
				t.Stop()
				return // Close flushes
			}
		}
		l.flushOnce()
	}
}

// flushOnce fsyncs the events appended so far, if any are not on disk,
// and wakes whoever waits for them.
func (l *Log) flushOnce() {
	l.mu.Lock()
	f, target, retired := l.mu.f, l.mu.seq, l.mu.retired
	l.mu.retired = nil
	l.mu.Unlock()
	for _, old := range retired {
		old.Close() // replaced by a compaction, which synced what it copied
	}
	l.sync.Lock()
	pending := target > l.sync.synced
	l.sync.Unlock()
	if f == nil || !pending {
		return
	}
	err := f.Sync()
	l.sync.Lock()
	if err != nil {
		l.sync.failed, l.sync.err = target, fmt.Errorf("auditlog: sync: %w", err)
		l.log.Error("audit log fsync failed", "err", err)
	} else {
		l.sync.synced = target
	}
	close(l.sync.done)
	l.sync.done = make(chan struct{})
	l.sync.Unlock()
	if err == nil {
		l.mu.Lock()
		select {
		case l.mu.notify <- struct{}{}:
		default:
		}
		l.mu.Unlock()
	}
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

// Record appends an event and returns once it is on disk (Append, then
// Sync).
func (l *Log) Record(ev api.AuditEvent) error {
	seq, err := l.Append(ev)
	if err != nil {
		return err
	}
	return l.Sync(seq)
}

// Append writes events, giving them the next sequence numbers, and
// returns the last of them. The events are written in one piece, all or
// none: a write that fails part way (a full disk) is cut back off the
// file, so a batch of calls is never half recorded and no torn line is
// left in the middle of the log, where it would stop shipping and be cut
// off, with every event after it, at the next Open. The events are then
// in the file (they survive a crash of this process) but not yet on disk
// (a power cut may lose them): Sync makes it so. The proxy appends before
// it forwards a call and syncs while the upstream works.
func (l *Log) Append(evs ...api.AuditEvent) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.mu.f == nil:
		return 0, errors.New("auditlog: closed")
	case l.mu.broken != nil:
		return 0, l.mu.broken
	case len(evs) == 0:
		return l.mu.seq, nil
	}
	var buf []byte
	seq := l.mu.seq
	for _, ev := range evs {
		seq++
		ev.Seq = seq
		b, err := json.Marshal(ev)
		if err != nil {
			return 0, fmt.Errorf("auditlog: encode: %w", err)
		}
		buf = append(append(buf, b...), '\n')
	}
	if _, err := l.mu.f.WriteAt(buf, l.mu.size); err != nil {
		if terr := l.mu.f.Truncate(l.mu.size); terr != nil {
			// The torn bytes stay at the end of the file, where the next
			// Open cuts them off; until then nothing more is appended
			// after them.
			l.mu.broken = fmt.Errorf("auditlog: a failed append could not be undone (restart the node to recover): %w", terr)
			l.log.Error("audit log damaged", "err", l.mu.broken)
		}
		return 0, fmt.Errorf("auditlog: append: %w", err)
	}
	l.mu.size += int64(len(buf))
	l.mu.seq = seq
	select {
	case l.kick <- struct{}{}: // the flusher starts on it now, or right after the fsync it is in
	default:
	}
	return seq, nil
}

// Sync returns once every event up to seq is on disk. The fsync is the
// flusher's, shared by every event appended while the one before ran.
func (l *Log) Sync(seq uint64) error {
	for {
		l.sync.Lock()
		synced, failed, err, done := l.sync.synced, l.sync.failed, l.sync.err, l.sync.done
		l.sync.Unlock()
		switch {
		case synced >= seq:
			return nil
		case failed >= seq:
			return err
		}
		select {
		case l.kick <- struct{}{}:
		default:
		}
		select {
		case <-done:
		case <-l.stopped:
			l.sync.Lock()
			synced = l.sync.synced
			l.sync.Unlock()
			if synced >= seq {
				return nil
			}
			return errors.New("auditlog: closed before the event was on disk")
		}
	}
}

// Pending returns up to max events after the acknowledged sequence. It
// reads from where they start, so the cost is the batch, not the file.
func (l *Log) Pending(max int) ([]api.AuditEvent, error) {
	for {
		evs, moved, err := l.pending(max)
		if !moved {
			return evs, err
		}
	}
}

// pending is Pending, reporting instead that a compaction moved the
// events while they were read.
func (l *Log) pending(max int) (_ []api.AuditEvent, moved bool, _ error) {
	l.mu.Lock()
	acked, seq, off, gen := l.mu.acked, l.mu.seq, l.mu.ackedOff, l.mu.gen
	l.mu.Unlock()
	if seq <= acked {
		return nil, false, nil
	}
	evs, ends, err := l.readFrom(off, func(ev *api.AuditEvent) bool { return ev.Seq > acked }, max)
	l.mu.Lock()
	if l.mu.gen != gen {
		// A compaction moved the events while they were read: what was
		// read at the old offsets means nothing.
		l.mu.Unlock()
		return nil, true, nil
	}
	if err != nil {
		l.mu.Unlock()
		return nil, false, err
	}
	l.mu.ends = make(map[uint64]int64, len(evs))
	for i, ev := range evs {
		l.mu.ends[ev.Seq] = ends[i]
	}
	l.mu.Unlock()
	return evs, false, nil
}

// Read returns up to max events (oldest first) for which keep is true.
func (l *Log) Read(keep func(*api.AuditEvent) bool, max int) ([]api.AuditEvent, error) {
	evs, _, err := l.readFrom(0, keep, max)
	return evs, err
}

// readFrom reads whole events from offset off, returning those keep
// accepts (at most max) and the offset just past each of them; it stops
// at the first event keep refuses after accepting some when reading the
// acknowledged prefix, and at a line still being written.
func (l *Log) readFrom(off int64, keep func(*api.AuditEvent) bool, max int) ([]api.AuditEvent, []int64, error) {
	f, err := os.Open(filepath.Join(l.dir, fileEvents))
	if err != nil {
		return nil, nil, fmt.Errorf("auditlog: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("auditlog: %w", err)
	}
	var out []api.AuditEvent
	var ends []int64
	r := bufio.NewReaderSize(f, 64<<10)
	for len(out) < max {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // end of file, or a line being written right now
		}
		off += int64(len(line))
		var ev api.AuditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			break
		}
		if keep(&ev) {
			out = append(out, ev)
			ends = append(ends, off)
		}
	}
	return out, ends, nil
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
	if off, ok := l.mu.ends[seq]; ok {
		l.mu.ackedOff = off
	} else {
		// Acknowledged past what Pending handed out (another shipper, or a
		// restart): find the offset by reading.
		acked := seq
		_, offs, err := l.readFrom(0, func(ev *api.AuditEvent) bool { return ev.Seq <= acked }, math.MaxInt)
		if err == nil && len(offs) > 0 {
			l.mu.ackedOff = offs[len(offs)-1]
		}
	}
	l.mu.ends = nil
	return nil
}

// Stats reports the last written and acknowledged sequence numbers.
func (l *Log) Stats() (written, acked uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.seq, l.mu.acked
}

// warnShipFailuresAfter is how long shipping fails before the log says so
// at Warn (each failure is logged at Debug).
const warnShipFailuresAfter = time.Minute

// Ship sends pending events with send until ctx ends, waking on every new
// event and retrying failures with backoff. send returns the highest
// sequence of the batch, once the coordinator holds all of it.
func (l *Log) Ship(ctx context.Context, send func(context.Context, []api.AuditEvent) (uint64, error)) {
	retry := time.Second
	// A failure now and then (a coordinator restart) is routine; one that
	// lasts means the trail is not leaving this node, which an operator
	// must hear of, once per streak.
	var failingSince time.Time
	warned := false
	for {
		evs, err := l.Pending(maxBatch)
		if err == nil && len(evs) > 0 {
			var stored uint64
			stored, err = send(ctx, evs)
			if err == nil {
				err = l.Ack(stored)
			}
			if err == nil && stored < evs[0].Seq {
				// Nothing of it was stored (a coordinator that answers
				// below the batch): asking again at once would spin;
				// back off as after a failure.
				err = fmt.Errorf("auditlog: the coordinator stored none of %d events (up to seq %d)", len(evs), evs[len(evs)-1].Seq)
			}
			if err == nil {
				if warned {
					l.log.Info("audit events reach the coordinator again", "after", time.Since(failingSince).Round(time.Second))
				}
				failingSince, warned = time.Time{}, false
				if cerr := l.compact(); cerr != nil {
					l.log.Warn("audit log compaction failed; the file keeps growing until one succeeds", "err", cerr)
				}
				retry = time.Second
				continue // more may be pending
			}
		}
		wait := 30 * time.Second
		if err != nil {
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if !warned && time.Since(failingSince) >= l.warnShipAfter {
				written, acked := l.Stats()
				l.log.Warn("audit events are not reaching the coordinator; they stay in the node's file until they do",
					"for", time.Since(failingSince).Round(time.Second), "unshipped", written-acked, "err", err)
				warned = true
			}
			l.log.Debug("audit shipping failed; retrying", "err", err, "in", retry)
			wait, retry = retry, min(retry*2, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-l.mu.notify:
			// Let a burst of decisions gather into one shipment.
			select {
			case <-ctx.Done():
				return
			case <-time.After(shipDelay):
			}
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
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.stopped
	l.flushOnce() // what was appended last goes to disk before the file closes
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, old := range l.mu.retired {
		old.Close()
	}
	l.mu.retired = nil
	if l.mu.f == nil {
		return nil
	}
	err := l.mu.f.Close()
	l.mu.f = nil
	return err
}

// SetCompaction sets when the file is compacted (its acknowledged part
// past over bytes) and how much acknowledged history it keeps (keep bytes,
// at least 64 KiB so that the last event, which carries the sequence a
// restart goes on from, always stays).
func (l *Log) SetCompaction(over, keep int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.compactOver, l.keepAcked = over, max(keep, 64<<10)
}

// compact rewrites the file without the acknowledged events before the
// last keepAcked bytes of them, once they pass compactOver. The bulk is
// copied without holding the lock (written bytes never change); only what
// was appended meanwhile is copied under it, before the new file takes the
// old one's name in one rename. Every event the coordinator has not
// acknowledged stays, and so does the last event (the sequence goes on
// from it after a restart).
func (l *Log) compact() error {
	l.mu.Lock()
	over, keep := l.compactOver, l.keepAcked
	f, size, ackedOff, gen := l.mu.f, l.mu.size, l.mu.ackedOff, l.mu.gen
	l.mu.Unlock()
	if f == nil || ackedOff <= over {
		return nil
	}
	from, err := lineStart(f, ackedOff-keep, ackedOff)
	if err != nil || from == 0 || from >= size {
		return err // nothing to drop, or it would drop the last event
	}
	path := filepath.Join(l.dir, fileNext)
	next, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("auditlog: compact: %w", err)
	}
	fail := func(err error) error {
		next.Close()
		os.Remove(path)
		return fmt.Errorf("auditlog: compact: %w", err)
	}
	if _, err := io.Copy(next, io.NewSectionReader(f, from, size-from)); err != nil {
		return fail(err)
	}
	if err := next.Sync(); err != nil {
		return fail(err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.f != f || l.mu.gen != gen || l.mu.broken != nil {
		return fail(errors.New("the log changed under the compaction"))
	}
	if l.mu.size < size { // a failed append cut back what was copied
		return fail(errors.New("the log shrank under the compaction"))
	}
	if _, err := io.Copy(io.NewOffsetWriter(next, size-from), io.NewSectionReader(f, size, l.mu.size-size)); err != nil {
		return fail(err)
	}
	if err := next.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(path, filepath.Join(l.dir, fileEvents)); err != nil {
		return fail(err)
	}
	if d, err := os.Open(l.dir); err == nil {
		d.Sync() // the rename itself survives a power cut
		d.Close()
	}
	l.mu.retired = append(l.mu.retired, f)
	l.mu.f = next
	l.mu.size -= from
	l.mu.ackedOff -= from
	l.mu.ends = nil
	l.mu.gen++
	l.log.Info("audit log compacted", "dropped_bytes", from, "kept_bytes", l.mu.size)
	return nil
}

// lineStart returns the offset of the first line that starts at or after
// off (0 if off <= 0), looking no further than limit; limit if none does.
func lineStart(f *os.File, off, limit int64) (int64, error) {
	if off <= 0 {
		return 0, nil
	}
	r := bufio.NewReader(io.NewSectionReader(f, off-1, limit-(off-1)))
	skipped := int64(0)
	for {
		b, err := r.ReadSlice('\n')
		skipped += int64(len(b))
		switch {
		case err == nil:
			return off - 1 + skipped, nil
		case errors.Is(err, io.EOF):
			return limit, nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return 0, fmt.Errorf("auditlog: compact: %w", err)
		}
	}
}
