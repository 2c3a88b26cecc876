// Package stdioserve runs a stdio MCP server behind a loopback Streamable
// HTTP endpoint, so the node's proxy treats it like any other upstream.
//
// The endpoint answers only its node's proxy: every request must carry the
// server's credential (Credential, a random secret that never leaves the
// daemon's memory), name the endpoint's own address as Host, and come from
// no web page (no Origin). A loopback port is open to every user of the
// host and to every page in its browsers; without this, any of them could
// call the server's tools as the daemon's user, past the policy and the
// audit.
//
// Every MCP session gets its own process: the initialize request starts
// one, DELETE (or the node stopping) ends it. That is what makes the
// sessions of different callers unable to see each other's responses,
// notifications, subscriptions or logging levels, which no multiplexing
// over a single process could promise. A process that exits ends its
// session; starting processes is throttled with backoff so a crashing
// server cannot spin the host. Stderr goes to the node's log.
package stdioserve

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MaxSessions is how many sessions, each a process, one stdio upstream
// runs at once. The proxy in front gives each caller a share of it.
const MaxSessions = 64

// IdleTimeout ends a session that has had no request, no request in
// flight and no open stream for this long, with its process: a client
// that goes away without DELETE does not keep a process, and a slot,
// for good. It matches the proxy's own idle limit for sessions.
const IdleTimeout = 30 * time.Minute

// Limits.
const (
	maxMessageBytes = 4 << 20
	requestTimeout  = 5 * time.Minute
	backlog         = 256 // server-initiated messages kept for a session without a GET stream
)

// Server is a running stdio upstream.
type Server struct {
	argv []string
	log  *slog.Logger
	ln   net.Listener
	hs   *http.Server
	idle time.Duration // IdleTimeout, shorter in tests
	stop chan struct{} // closed by Close: ends the reaper
	// auth is the Authorization header value every request must carry.
	auth string

	mu struct {
		sync.Mutex
		sessions  map[string]*session
		failures  int       // consecutive processes that died at start
		nextSpawn time.Time // backoff after failures
		closed    bool
	}
}

// SplitCommand splits a command line on spaces, honouring single and double
// quotes; there is no shell, so nothing else is special.
func SplitCommand(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("stdioserve: unterminated %c quote in %q", quote, s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	if len(out) == 0 {
		return nil, errors.New("stdioserve: empty command")
	}
	return out, nil
}

// Start checks the command exists and serves it on a loopback port.
func Start(command string, log *slog.Logger) (*Server, error) {
	return start(command, log, IdleTimeout)
}

func start(command string, log *slog.Logger, idle time.Duration) (*Server, error) {
	argv, err := SplitCommand(command)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(argv[0]); err != nil {
		return nil, fmt.Errorf("stdioserve: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stdioserve: %w", err)
	}
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		ln.Close()
		return nil, fmt.Errorf("stdioserve: credential: %w", err)
	}
	s := &Server{argv: argv, log: log, ln: ln, idle: idle, stop: make(chan struct{}),
		auth: "Bearer " + hex.EncodeToString(secret[:])}
	s.mu.sessions = map[string]*session{}
	s.hs = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.hs.Serve(ln) }() // ends with Close
	go s.reapIdle()
	return s, nil
}

// reapIdle ends idle sessions until Close.
func (s *Server) reapIdle() {
	t := time.NewTicker(max(s.idle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.reap()
		}
	}
}

// reap ends the sessions that have been idle for s.idle.
func (s *Server) reap() {
	cutoff := time.Now().Add(-s.idle).UnixNano()
	var idle []*session
	s.mu.Lock()
	for _, ss := range s.mu.sessions {
		if ss.idleSince(cutoff) {
			idle = append(idle, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range idle {
		s.log.Info("stdio session idle; ending it and its process", "session", ss.id, "idle_for", s.idle)
		s.drop(ss)
	}
}

// Credential is the header every request to URL must carry: the node's
// proxy sends it, and no one else knows it.
func (s *Server) Credential() http.Header {
	return http.Header{"Authorization": {s.auth}}
}

// admit refuses a request that is not its node proxy's: without the
// credential, for another Host (DNS rebinding), or from a web page.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(s.auth)) != 1:
		http.Error(w, "stdioserve: this endpoint answers only its node's MCP proxy", http.StatusUnauthorized)
	case r.Host != s.ln.Addr().String():
		http.Error(w, "stdioserve: wrong Host", http.StatusMisdirectedRequest)
	case r.Header.Get("Origin") != "":
		http.Error(w, "stdioserve: requests from web pages are refused", http.StatusForbidden)
	default:
		return true
	}
	return false
}

// URL is the loopback Streamable HTTP endpoint.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/mcp" }

// Close ends every session and its process.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.mu.closed {
		close(s.stop)
	}
	s.mu.closed = true
	sessions := s.mu.sessions
	s.mu.sessions = map[string]*session{}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.close()
	}
	return s.hs.Close()
}

// session is one process and what is waiting on it.
type session struct {
	id    string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	log   *slog.Logger

	mu      sync.Mutex
	waiting map[string]chan []byte // request id → its response
	queue   chan []byte            // messages the server started
	done    chan struct{}
	once    sync.Once

	// lastUsed (unix nanoseconds) is when a request last came or ended;
	// streams counts open GET streams. Together they say it is idle.
	lastUsed atomic.Int64
	streams  atomic.Int32
}

func (ss *session) touch() { ss.lastUsed.Store(time.Now().UnixNano()) }

// idleSince reports whether the session has been unused since cutoff: no
// request since, none waiting for an answer, no open stream.
func (ss *session) idleSince(cutoff int64) bool {
	if ss.lastUsed.Load() >= cutoff || ss.streams.Load() > 0 {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.waiting) == 0
}

func (ss *session) close() {
	ss.once.Do(func() {
		close(ss.done)
		ss.stdin.Close()
		if ss.cmd.Process != nil {
			_ = ss.cmd.Process.Kill()
		}
	})
}

type envelope struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.admit(w, r) {
		return
	}
	switch r.Method {
	case http.MethodPost:
		s.post(w, r)
	case http.MethodGet:
		s.stream(w, r)
	case http.MethodDelete:
		if ss := s.session(r); ss != nil {
			s.drop(ss)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		http.Error(w, "unknown session", http.StatusNotFound)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (s *Server) session(r *http.Request) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.sessions[r.Header.Get("Mcp-Session-Id")]
}

func (s *Server) drop(ss *session) {
	s.mu.Lock()
	delete(s.mu.sessions, ss.id)
	s.mu.Unlock()
	ss.close()
}

func (s *Server) post(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxMessageBytes+1))
	if err != nil || len(body) > maxMessageBytes {
		http.Error(w, "message too large", http.StatusRequestEntityTooLarge)
		return
	}
	body = bytes.TrimSpace(body)
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		http.Error(w, "a single JSON-RPC message is expected", http.StatusBadRequest)
		return
	}
	ss := s.session(r)
	if ss == nil {
		if env.Method != "initialize" || r.Header.Get("Mcp-Session-Id") != "" {
			http.Error(w, "unknown session; send initialize first", http.StatusNotFound)
			return
		}
		if ss, err = s.spawn(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	ss.touch()
	defer ss.touch()
	isRequest := len(env.ID) > 0 && env.Method != ""
	var ch chan []byte
	if isRequest {
		ch = make(chan []byte, 1)
		ss.mu.Lock()
		ss.waiting[string(env.ID)] = ch
		ss.mu.Unlock()
	}
	if _, err := ss.stdin.Write(append(body, '\n')); err != nil {
		s.drop(ss)
		http.Error(w, "the server process has exited", http.StatusBadGateway)
		return
	}
	w.Header().Set("Mcp-Session-Id", ss.id)
	if !isRequest {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	select {
	case resp := <-ch:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(resp)
	case <-ss.done:
		http.Error(w, "the server process has exited", http.StatusBadGateway)
	case <-r.Context().Done():
	case <-time.After(requestTimeout):
		http.Error(w, "the server did not answer in time", http.StatusGatewayTimeout)
	}
	ss.mu.Lock()
	delete(ss.waiting, string(env.ID))
	ss.mu.Unlock()
}

// stream is the standalone SSE stream: messages the server process starts.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	ss := s.session(r)
	if ss == nil {
		http.Error(w, "unknown session", http.StatusNotFound)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ss.streams.Add(1)
	defer func() { ss.touch(); ss.streams.Add(-1) }()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	for {
		select {
		case msg := <-ss.queue:
			if _, err := fmt.Fprintf(w, "event: message\ndata: %s\n\n", msg); err != nil {
				return
			}
			fl.Flush()
		case <-ss.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// spawn starts a process for a new session, throttled after failures.
func (s *Server) spawn() (*session, error) {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil, errors.New("stdio upstream is stopped")
	}
	if len(s.mu.sessions) >= MaxSessions {
		// Full: sessions idle for long enough make room first.
		s.mu.Unlock()
		s.reap()
		s.mu.Lock()
	}
	if len(s.mu.sessions) >= MaxSessions {
		s.mu.Unlock()
		return nil, fmt.Errorf("too many sessions (%d); end one first", MaxSessions)
	}
	if wait := time.Until(s.mu.nextSpawn); wait > 0 {
		s.mu.Unlock()
		return nil, fmt.Errorf("the server keeps exiting at start; next try in %s", wait.Round(time.Millisecond))
	}
	s.mu.Unlock()

	var idb [16]byte
	_, _ = rand.Read(idb[:])
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	ss := &session{id: hex.EncodeToString(idb[:]), cmd: cmd, stdin: stdin, log: s.log,
		waiting: map[string]chan []byte{}, queue: make(chan []byte, backlog), done: make(chan struct{})}
	ss.touch()
	if err := cmd.Start(); err != nil {
		s.failed()
		return nil, fmt.Errorf("start %s: %w", s.argv[0], err)
	}
	started := time.Now()
	s.mu.Lock()
	// Checked again: other spawns, or Close, may have come in meanwhile.
	if s.mu.closed || len(s.mu.sessions) >= MaxSessions {
		closed := s.mu.closed
		s.mu.Unlock()
		ss.close()
		go func() { _ = cmd.Wait() }()
		if closed {
			return nil, errors.New("stdio upstream is stopped")
		}
		return nil, fmt.Errorf("too many sessions (%d); end one first", MaxSessions)
	}
	s.mu.sessions[ss.id] = ss
	s.mu.Unlock()
	go ss.logStderr(stderr, s.argv[0])
	go func() {
		ss.readStdout(stdout)
		err := cmd.Wait()
		if time.Since(started) < 2*time.Second && !isClosed(ss.done) {
			s.failed()
		} else {
			s.mu.Lock()
			s.mu.failures = 0
			s.mu.Unlock()
		}
		s.log.Info("stdio server process exited", "session", ss.id, "err", err)
		s.drop(ss)
	}()
	return ss, nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// failed backs off new processes exponentially after quick exits.
func (s *Server) failed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.failures++
	d := min(time.Duration(1<<min(s.mu.failures, 6))*250*time.Millisecond, 30*time.Second)
	s.mu.nextSpawn = time.Now().Add(d)
}

// readStdout routes each message the process writes: a response to the
// POST waiting for its id, anything else to the session's stream.
func (ss *session) readStdout(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxMessageBytes)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		msg := append([]byte(nil), line...)
		var env envelope
		if json.Unmarshal(msg, &env) != nil {
			ss.log.Warn("stdio server wrote a line that is not JSON; dropped")
			continue
		}
		if len(env.ID) > 0 && env.Method == "" {
			ss.mu.Lock()
			ch := ss.waiting[string(env.ID)]
			ss.mu.Unlock()
			if ch != nil {
				ch <- msg
				continue
			}
		}
		select {
		case ss.queue <- msg:
		default:
			ss.log.Warn("session has no listener for server messages; dropped one", "session", ss.id)
		}
	}
}

func (ss *session) logStderr(r io.Reader, name string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		ss.log.Info("stdio server stderr", "cmd", name, "session", ss.id, "line", sc.Text())
	}
}
