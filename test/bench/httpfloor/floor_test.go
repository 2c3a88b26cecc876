// Package httpfloor measures what net/http's server costs per request
// against the least an HTTP/1.1 server can do (the standard library's
// request parser and one formatted answer per request, on the connection's
// goroutine). It answers one question about the MCP proxy: would replacing
// net/http's server on the mesh side pay for the risk of owning an HTTP
// server in front of every caller? (Measured: about 5 µs a request, no.)
//
//	go test ./test/bench/httpfloor -run '^$' -bench . -benchtime 64000x
package httpfloor

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const body = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"echo:hello"}]}}`

// cpu is this process's CPU time so far (user and system).
func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(0, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// netHTTP serves a fixed answer with net/http's server.
func netHTTP(ln net.Listener) {
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write([]byte(body))
	}))
}

// loop serves the same answer with the least an HTTP/1.1 server does.
func loop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			bw := bufio.NewWriter(c)
			for {
				r, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.ReadAll(r.Body)
				fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				bw.Flush()
			}
		}()
	}
}

// run sends calls requests over conns kept-alive connections (a raw
// client, the same for both servers) and returns the CPU time used.
func run(b *testing.B, addr string, conns, calls int) time.Duration {
	var wg sync.WaitGroup
	req := "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n" + strings.Repeat("x", 60)
	c0 := cpu()
	for range conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for range calls / conns {
				io.WriteString(c, req)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
			}
		})
	}
	wg.Wait()
	return cpu() - c0
}

// BenchmarkServers compares CPU per request (client and server, in this
// process) for the two servers, in alternating rounds.
func BenchmarkServers(b *testing.B) {
	l1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l1.Close()
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l2.Close()
	go netHTTP(l1)
	go loop(l2)
	run(b, l1.Addr().String(), 64, 6400)
	run(b, l2.Addr().String(), 64, 6400)
	var a, c time.Duration
	for range 4 {
		a += run(b, l1.Addr().String(), 64, b.N/4)
		c += run(b, l2.Addr().String(), 64, b.N/4)
	}
	b.ReportMetric(float64(a.Microseconds())/float64(b.N), "nethttp-cpu-µs/req")
	b.ReportMetric(float64(c.Microseconds())/float64(b.N), "loop-cpu-µs/req")
	b.ReportMetric(0, "ns/op")
}
