package platform

import (
	"bytes"
	"testing"
	"testing/iotest"
	"unicode"
	"unicode/utf8"
)

// Real answers to the probe's initialize, as captured from the servers.
const (
	// sdkEventStreamAnswer is the Go SDK's Streamable HTTP handler.
	sdkEventStreamAnswer = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"capabilities\":{\"logging\":{}},\"protocolVersion\":\"2025-06-18\",\"serverInfo\":{\"name\":\"notes\",\"version\":\"0.3.1\"}}}\n\n"
	// sdkJSONAnswer is the same with JSONResponse set.
	sdkJSONAnswer = `{"jsonrpc":"2.0","id":1,"result":{"capabilities":{"logging":{}},"protocolVersion":"2025-06-18","serverInfo":{"name":"notes","version":"0.3.1"}}}`
	// sdkSSEEndpoint is the start of the Go SDK's SSE handler's stream.
	sdkSSEEndpoint = "event: endpoint\ndata: /sse?sessionid=K2CZCT4LKN7DG77ENDT3FHUQES\n\n"
	// everythingAnswer is mcp-server-everything 2026.8.31 (TypeScript
	// SDK), its instructions shortened.
	everythingAnswer = "event: message\nid: 7483580b-773a-4d30-9406-cc22af6a4cc9\ndata: {\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{\"tools\":{\"listChanged\":true},\"prompts\":{\"listChanged\":true},\"resources\":{\"subscribe\":true,\"listChanged\":true},\"logging\":{},\"tasks\":{\"list\":{},\"cancel\":{},\"requests\":{\"tools\":{\"call\":{}}}},\"completions\":{}},\"serverInfo\":{\"name\":\"mcp-servers/everything\",\"title\":\"Everything Reference Server\",\"version\":\"2.0.0\"},\"instructions\":\"# Everything Server – Server Instructions\\n\\nIf asked about server instructions, respond with \\\"🎉 Server instructions are working!\\\"\\n\"},\"jsonrpc\":\"2.0\",\"id\":1}\n\n"
)

func TestClassifyAnswerReadsRealAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		want                    probeVerdict
	}{
		{"Go SDK event stream", "text/event-stream", sdkEventStreamAnswer, probeVerdict{answer: MCPAnswer{
			Transport: TransportStreamableHTTP, ServerName: "notes", ServerVersion: "0.3.1", ProtocolVersion: "2025-06-18"}}},
		{"Go SDK JSON", "application/json", sdkJSONAnswer, probeVerdict{answer: MCPAnswer{
			Transport: TransportStreamableHTTP, ServerName: "notes", ServerVersion: "0.3.1", ProtocolVersion: "2025-06-18"}}},
		{"Go SDK SSE transport", "text/event-stream", sdkSSEEndpoint, probeVerdict{
			answer: MCPAnswer{Transport: TransportSSE}, endpoint: "/sse?sessionid=K2CZCT4LKN7DG77ENDT3FHUQES"}},
		{"TypeScript SDK event stream", "text/event-stream; charset=utf-8", everythingAnswer, probeVerdict{answer: MCPAnswer{
			Transport: TransportStreamableHTTP, ServerName: "mcp-servers/everything", ServerVersion: "2.0.0", ProtocolVersion: "2025-06-18"}}},
		{"notification first, CRLF lines", "text/event-stream", ": hi\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\n\r\n" +
			"data: {\"jsonrpc\":\"2.0\",\"id\":1,\r\ndata: \"result\":{\"protocolVersion\":\"x\",\"serverInfo\":{\"name\":\"split\"}}}\r\n\r\n",
			probeVerdict{answer: MCPAnswer{Transport: TransportStreamableHTTP, ServerName: "split", ProtocolVersion: "x"}}},
		{"batch", "application/json", "[" + sdkJSONAnswer + "]", probeVerdict{answer: MCPAnswer{
			Transport: TransportStreamableHTTP, ServerName: "notes", ServerVersion: "0.3.1", ProtocolVersion: "2025-06-18"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := classifyAnswer(tc.contentType, []byte(tc.body))
			if !ok || got != tc.want {
				t.Errorf("classifyAnswer = %+v, %v; want %+v", got, ok, tc.want)
			}
		})
	}
}

func TestClassifyAnswerRejectsWhatIsNotAnInitializeResult(t *testing.T) {
	for _, tc := range []struct{ name, contentType, body string }{
		{"web page", "text/html", "<html></html>"},
		{"JSON-RPC error", "application/json", `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}}`},
		{"other id", "application/json", `{"jsonrpc":"2.0","id":2,"result":{"protocolVersion":"2025-06-18","serverInfo":{}}}`},
		{"version not a string", "application/json", `{"id":1,"result":{"protocolVersion":20250618,"serverInfo":{}}}`},
		{"version null", "application/json", `{"id":1,"result":{"protocolVersion":null,"serverInfo":{}}}`},
		{"serverInfo not an object", "application/json", `{"id":1,"result":{"protocolVersion":"2025-06-18","serverInfo":"x"}}`},
		{"JSON as an event stream", "text/event-stream", sdkJSONAnswer},
		{"endpoint after another event", "text/event-stream", "event: ping\ndata: 1\n\n" + sdkSSEEndpoint},
		{"empty endpoint", "text/event-stream", "event: endpoint\ndata: \n\n"},
		{"answer past 64 KiB", "text/event-stream", ":" + string(bytes.Repeat([]byte("x"), probeMaxBody)) + "\n\n" + sdkEventStreamAnswer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, ok := classifyAnswer(tc.contentType, []byte(tc.body)); ok {
				t.Errorf("classifyAnswer = %+v, want no answer", got)
			}
		})
	}
}

// FuzzClassifyAnswer proves the classifier never panics, keeps what it
// returns fit for a report, and decides the same whether the body arrives
// at once or a byte at a time.
func FuzzClassifyAnswer(f *testing.F) {
	f.Add("text/event-stream", []byte(sdkEventStreamAnswer))
	f.Add("application/json", []byte(sdkJSONAnswer))
	f.Add("text/event-stream", []byte(sdkSSEEndpoint))
	f.Add("text/event-stream; charset=utf-8", []byte(everythingAnswer))
	f.Add("application/json", []byte("["+sdkJSONAnswer+"]"))
	f.Add("text/html", []byte("<html></html>"))
	f.Add("", []byte(`{"id":1,"result":{"protocolVersion":"\u0000\ud800","serverInfo":{"name":7}}}`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		v, ok := classifyAnswer(contentType, body)
		again, okAgain := readAnswer(contentType, iotest.OneByteReader(bytes.NewReader(body)))
		if ok != okAgain || v != again {
			t.Fatalf("whole body: %+v, %v; byte by byte: %+v, %v", v, ok, again, okAgain)
		}
		if !ok {
			if v != (probeVerdict{}) {
				t.Fatalf("no answer, yet %+v", v)
			}
			return
		}
		switch v.answer.Transport {
		case TransportStreamableHTTP:
			if v.answer.ProtocolVersion == "" || v.endpoint != "" {
				t.Fatalf("streamable answer %+v", v)
			}
		case TransportSSE:
			if v.endpoint == "" || v.answer != (MCPAnswer{Transport: TransportSSE}) {
				t.Fatalf("SSE answer %+v", v)
			}
		default:
			t.Fatalf("answer with transport %q", v.answer.Transport)
		}
		if v.answer.URL != "" {
			t.Fatalf("classifier set the URL: %+v", v)
		}
		for _, s := range []string{v.answer.ServerName, v.answer.ServerVersion, v.answer.ProtocolVersion} {
			if len(s) > probeMaxString || !utf8.ValidString(s) || bytes.ContainsFunc([]byte(s), unicode.IsControl) {
				t.Fatalf("unfit string %q in %+v", s, v)
			}
		}
	})
}
