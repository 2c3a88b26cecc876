package mcp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/mcpmesh/mcpmesh/mcp/policy"
)

// hopHeaders are not copied from an upstream answer.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Transfer-Encoding": true, "Te": true,
	"Trailer": true, "Upgrade": true, "Content-Length": true, "Proxy-Connection": true,
	"Set-Cookie": true,
}

// listKeys are the result members that carry listed items, with the key
// naming each item and the kind it is decided as.
var listKeys = []struct {
	member, key, method string
	kind                policy.Kind
}{
	{"tools", "name", "tools/list", policy.KindTool},
	{"resources", "uri", "resources/list", policy.KindResource},
	{"resourceTemplates", "uriTemplate", "resources/templates/list", policy.KindResource},
	{"prompts", "name", "prompts/list", policy.KindPrompt},
}

// methodTaskCall marks, among remembered requests, a task-augmented
// tools/call whose answer names a task to record.
const methodTaskCall = "tools/call+task"

// mayList is a cheap test for an answer that may carry a list or a task: a
// list member, "task" or "tasks" appears as a quoted key in the raw bytes.
func mayList(data []byte) bool {
	for _, l := range listKeys {
		if bytes.Contains(data, []byte(`"`+l.member+`"`)) {
			return true
		}
	}
	return bytes.Contains(data, []byte(`"task"`)) || bytes.Contains(data, []byte(`"tasks"`))
}

// relay copies an upstream answer to the caller, filtering list answers and
// adding the error responses of denied batch elements.
func (x *exchange) relay(resp *http.Response, lists map[string]string, denials [][]byte) {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// Compressed bytes cannot be filtered: passing them on would hand
		// the caller unfiltered lists. The proxy never asks for an encoding.
		x.p.log.Warn("mcp: upstream answered with a content encoding; refused", "service", x.d.svc.Name, "encoding", ce)
		writeRPCError(x.w, http.StatusBadGateway, nil, codeInternal, fmt.Sprintf("mcp: upstream of %q answered with Content-Encoding %q, which the proxy cannot inspect (not forwarded)", x.d.svc.Name, ce))
		return
	}
	h := x.w.Header()
	for k, vs := range resp.Header {
		if !hopHeaders[k] {
			h[k] = vs
		}
	}
	switch baseMediaType(resp.Header.Get("Content-Type")) {
	case "text/event-stream":
		// Events are re-encoded and filtered, so the upstream's length (an
		// SSE answer may carry one) no longer holds.
		h.Del("Content-Length")
		x.w.WriteHeader(resp.StatusCode)
		// Send the headers now: a client waits for them before it goes on,
		// and a standalone stream may carry no event for a long time.
		_ = http.NewResponseController(x.w).Flush()
		x.relaySSE(resp.Body, lists, denials)
	case "application/json":
		body, err := readAllSized(resp.Body, resp.ContentLength, maxUpstreamBody)
		if err != nil || len(body) > maxUpstreamBody {
			h.Del("Content-Type")
			writeRPCError(x.w, http.StatusBadGateway, nil, codeInternal, "mcp: upstream answer unreadable or too large")
			return
		}
		if resp.StatusCode/100 == 2 && (len(denials) > 0 || len(lists) > 0 || mayList(body)) {
			if body, err = x.rewrite(body, lists, denials); err != nil {
				h.Del("Content-Type")
				writeRPCError(x.w, http.StatusBadGateway, nil, codeInternal, "mcp: upstream answer cannot be inspected (not forwarded): "+err.Error())
				return
			}
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		x.w.WriteHeader(resp.StatusCode)
		x.w.Write(body)
	default:
		if len(denials) > 0 && resp.StatusCode/100 == 2 {
			// The allowed part was only notifications or responses.
			out := joinBatch(denials)
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", strconv.Itoa(len(out)))
			x.w.WriteHeader(http.StatusOK)
			x.w.Write(out)
			return
		}
		x.w.WriteHeader(resp.StatusCode)
		io.Copy(x.w, io.LimitReader(resp.Body, maxUpstreamBody))
	}
}

// rewrite filters the list answers in a JSON answer (one response or a
// batch) and appends denials. An answer it cannot decode is an error: what
// cannot be inspected is not passed on (fail closed).
func (x *exchange) rewrite(body []byte, lists map[string]string, denials [][]byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		x.p.log.Warn("mcp: undecodable upstream answer; not forwarded", "service", x.d.svc.Name, "err", err)
		return nil, fmt.Errorf("undecodable JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON answer")
	}
	switch t := v.(type) {
	case map[string]any:
		x.filterResponse(t, lists)
		if len(denials) == 0 {
			return encodeValue(t), nil
		}
		return joinBatch(append([][]byte{encodeValue(t)}, denials...)), nil
	case []any:
		items := make([][]byte, 0, len(t)+len(denials))
		for _, e := range t {
			if o, ok := e.(map[string]any); ok {
				x.filterResponse(o, lists)
			}
			items = append(items, encodeValue(e))
		}
		return joinBatch(append(items, denials...)), nil
	}
	return nil, errors.New("the answer is neither an object nor an array")
}

// filterResponse filters every list in the result of a response: tools,
// resources, resource templates and prompts by the policy, tasks by owner.
// It does so whichever request the response answers. What the proxy
// remembers about a request (from this exchange's list requests, then the
// session's) only adds work, recording the task a task-augmented call
// created; it never exempts an answer from filtering, so no confusion over
// which request an id names can let a list through whole.
func (x *exchange) filterResponse(o map[string]any, lists map[string]string) bool {
	key := idKey(o["id"])
	method, known := lists[key]
	if !known && x.sess != nil {
		method, known = x.sess.lookup(key)
	}
	if x.sess != nil && known {
		x.sess.forget(key) // an answer, result or error, ends the request
	}
	res, ok := o["result"].(map[string]any)
	if !ok {
		return false
	}
	if known && method == methodTaskCall {
		if t, ok := res["task"].(map[string]any); ok {
			if id, ok := t["taskId"].(string); ok && id != "" {
				x.d.svc.addTask(id, x.d.caller.ID)
			}
		}
	}
	changed := false
	if tv, present := res["tasks"]; present {
		// Only the caller's own tasks, whatever the upstream lists.
		items, _ := tv.([]any)
		kept := make([]any, 0, len(items))
		for _, it := range items {
			if t, ok := it.(map[string]any); ok {
				if id, _ := t["taskId"].(string); id != "" {
					if o, ok := x.d.svc.taskOwner(id); ok && o == x.d.caller.ID {
						kept = append(kept, it)
					}
				}
			}
		}
		res["tasks"] = kept
		changed = len(kept) != len(items) || items == nil
	}
	var pol *policy.Policy
	if x.p.cfg.Policy != nil {
		pol, _ = x.p.cfg.Policy() // the policy now, not when the request came
	}
	for _, l := range listKeys {
		lv, present := res[l.member]
		if !present {
			continue
		}
		items, ok := lv.([]any)
		if !ok {
			// Not a list: nothing in it can be checked, so none of it goes.
			res[l.member] = []any{}
			changed = true
			continue
		}
		kept := make([]any, 0, len(items))
		for _, it := range items {
			item, ok := it.(map[string]any)
			if !ok {
				continue
			}
			name, _ := item[l.key].(string)
			if pol != nil && pol.Visible(policy.Request{Src: x.d.id, Dst: x.d.svc.dst, Kind: l.kind, Name: name}) {
				kept = append(kept, it)
			}
		}
		if len(kept) != len(items) {
			changed = true
		}
		res[l.member] = kept
	}
	return changed
}

// relaySSE copies an event stream event by event, rewriting the data of
// events that answer list requests, and flushing after every event.
func (x *exchange) relaySSE(body io.Reader, lists map[string]string, denials [][]byte) {
	rc := http.NewResponseController(x.w)
	for _, d := range denials {
		x.w.Write([]byte("event: message\ndata: "))
		x.w.Write(d)
		x.w.Write([]byte("\n\n"))
	}
	if len(denials) > 0 {
		rc.Flush()
	}
	br := bufio.NewReaderSize(body, 64<<10)
	var ev [][]byte // raw lines of the event being read, without line ends
	var total int
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line: collect it whole.
			buf := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				buf = append(buf, line...)
				if len(buf) > maxUpstreamBody {
					return
				}
			}
			line = buf
		}
		if len(line) == 0 && err != nil {
			if len(ev) > 0 {
				x.emitEvent(rc, ev, lists)
			}
			return
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			if !x.emitEvent(rc, ev, lists) {
				return // the caller is gone: stop reading the upstream
			}
			ev, total = ev[:0], 0
		} else {
			ev = append(ev, append([]byte(nil), line...))
			total += len(line)
			if total > maxUpstreamBody {
				return
			}
		}
		if err != nil {
			if len(ev) > 0 {
				x.emitEvent(rc, ev, lists)
			}
			return
		}
	}
}

// emitEvent writes one event (and the blank line ending it), or drops it;
// it reports false when the caller can no longer be written to.
func (x *exchange) emitEvent(rc *http.ResponseController, ev [][]byte, lists map[string]string) bool {
	var data [][]byte
	name := ""
	for _, l := range ev {
		f, v := sseField(l)
		switch f {
		case "data":
			data = append(data, v)
		case "event":
			name = string(v)
		}
	}
	var out bytes.Buffer
	if len(data) > 0 && (name == "" || name == "message") {
		joined := bytes.Join(data, []byte("\n"))
		x.noteServerRequests(joined)
		if !x.mayNotify(joined) {
			return true
		}
		// An event without JSON (a priming event: an id and empty data)
		// has nothing to filter, and its id is what a client resumes from.
		if len(bytes.TrimSpace(joined)) > 0 && (len(lists) > 0 || mayList(joined)) {
			nd, err := x.rewrite(joined, lists, nil)
			if err != nil {
				// Dropped, not passed on unread: the stream goes on.
				return true
			}
			if !bytes.Equal(nd, joined) {
				wrote := false
				for _, l := range ev {
					if f, _ := sseField(l); f == "data" {
						if !wrote {
							out.WriteString("data: ")
							out.Write(nd)
							out.WriteByte('\n')
							wrote = true
						}
						continue
					}
					out.Write(l)
					out.WriteByte('\n')
				}
				out.WriteByte('\n')
				return x.send(rc, out.Bytes())
			}
		}
	}
	for _, l := range ev {
		out.Write(l)
		out.WriteByte('\n')
	}
	out.WriteByte('\n')
	return x.send(rc, out.Bytes())
}

// send writes and flushes one event, and reports whether both worked.
func (x *exchange) send(rc *http.ResponseController, b []byte) bool {
	if _, err := x.w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// mayNotify reports whether an event may reach the caller: an update
// about a resource is dropped unless the caller may read that resource
// under the policy now. Subscriptions are decided when they are made; this
// keeps a grant withdrawn since then from leaving the caller a view of the
// resource's life.
func (x *exchange) mayNotify(data []byte) bool {
	if !bytes.Contains(data, []byte("notifications/resources/updated")) {
		return true
	}
	type note struct {
		Method string `json:"method"`
		Params struct {
			URI string `json:"uri"`
		} `json:"params"`
	}
	var notes []note
	if json.Unmarshal(data, &notes) != nil {
		var one note
		if json.Unmarshal(data, &one) != nil {
			return false // names the method but cannot be read: not passed on
		}
		notes = []note{one}
	}
	var pol *policy.Policy
	if x.p.cfg.Policy != nil {
		pol, _ = x.p.cfg.Policy()
	}
	for _, n := range notes {
		if n.Method != "notifications/resources/updated" {
			continue
		}
		if pol == nil || !pol.Visible(policy.Request{Src: x.d.id, Dst: x.d.svc.dst, Kind: policy.KindResource, Name: n.Params.URI}) {
			return false
		}
	}
	return true
}

// sseField splits an SSE line into field name and value.
func sseField(l []byte) (string, []byte) {
	if len(l) > 0 && l[0] == ':' {
		return "", nil // comment
	}
	f, v, found := bytes.Cut(l, []byte(":"))
	if !found {
		return string(l), nil
	}
	return string(f), bytes.TrimPrefix(v, []byte(" "))
}

// noteServerRequests records the ids of requests the server sends the
// client (sampling, elicitation, roots) in an event, so that the client's
// answers, and only those, are forwarded back to the upstream.
func (x *exchange) noteServerRequests(data []byte) {
	if x.sess == nil || !bytes.Contains(data, []byte(`"method"`)) {
		return
	}
	type req struct {
		ID     any    `json:"id"`
		Method string `json:"method"`
	}
	decode := func(v any) bool {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber() // ids compare as the strict parser reads them
		return dec.Decode(v) == nil
	}
	var one req
	if decode(&one) {
		if one.ID != nil && one.Method != "" {
			x.sess.expectReply(idKey(one.ID))
		}
		return
	}
	var batch []req
	if decode(&batch) {
		for _, r := range batch {
			if r.ID != nil && r.Method != "" {
				x.sess.expectReply(idKey(r.ID))
			}
		}
	}
}
