package bridge

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

// HTTP serves a loopback Streamable HTTP endpoint that forwards to Target.
// Because any web page the user opens can send requests to loopback, it
// refuses requests whose Origin is not a loopback origin and whose Host is
// not a loopback name (DNS rebinding: a page at evil.example that resolves
// to 127.0.0.1 still sends Host: evil.example).
type HTTP struct {
	Target    *url.URL
	Transport http.RoundTripper
}

// Handler returns the forwarding handler.
func (h *HTTP) Handler() http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host, r.Out.URL.Path, r.Out.URL.RawPath = h.Target.Scheme, h.Target.Host, h.Target.Path, ""
			r.Out.Host = h.Target.Host
			r.Out.Header.Del("Origin")
			r.Out.Header.Del("Cookie")
		},
		Transport:     h.Transport,
		FlushInterval: -1, // SSE: every event at once
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkLocal(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		rp.ServeHTTP(w, r)
	})
}

// checkLocal refuses requests that a browser page of another origin made.
func checkLocal(r *http.Request) error {
	if !loopbackHost(r.Host) {
		return fmt.Errorf("bridge: Host %q is not a loopback name; refusing (DNS rebinding protection)", r.Host)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !loopbackHost(u.Host) {
			return fmt.Errorf("bridge: requests from origin %q are refused; only local clients may use this endpoint", o)
		}
	}
	return nil
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
