package controlclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

// Backoff bounds for reconnecting the stream.
const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
	// idleTimeout ends a stream that carried nothing, not even a heartbeat,
	// for this long: the coordinator or the path to it is gone.
	idleTimeout = 35 * time.Second
)

// Handler receives what the stream brings.
type Handler interface {
	// Version is the netmap version the node holds (0 for none).
	Version() uint64
	// Apply installs a verified message. An error drops the stream; the
	// next connection asks again from Version().
	Apply(m *api.NetmapMessage) error
	// Connected is called before each stream connects, to push state such
	// as endpoints; an error delays the connection like a failed dial.
	Connected(ctx context.Context) error
}

// Run keeps the netmap stream open until ctx ends, reconnecting with
// exponential backoff and full jitter. It returns ctx's error, or a
// *api.StatusError when the coordinator refuses the node for good (revoked).
func (c *Client) Run(ctx context.Context, h Handler) error {
	delay := backoffMin
	for {
		start := time.Now()
		err := c.streamOnce(ctx, h)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *api.StatusError
		if errors.As(err, &se) && se.Permanent() {
			return err
		}
		if time.Since(start) > backoffMax {
			delay = backoffMin // the stream was healthy for a while
		}
		wait := time.Duration(rand.Int64N(int64(delay))) + backoffMin/2
		c.log.Info("netmap stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		delay = min(delay*2, backoffMax)
	}
}

func (c *Client) streamOnce(ctx context.Context, h Handler) error {
	if err := h.Connected(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u := c.base.JoinPath(api.PathNetmap)
	q := u.Query()
	q.Set("version", strconv.FormatUint(h.Version(), 10))
	q.Set("capver", strconv.Itoa(api.CapabilityVersion))
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := c.stream.Do(req)
	if err != nil {
		return api.UnwrapURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return api.DecodeResponse(resp, nil)
	}
	idle := time.AfterFunc(idleTimeout, cancel)
	defer idle.Stop()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readLine(r, api.MaxNetmapMessageBytes)
		if err != nil {
			if ctx.Err() != nil && !idle.Stop() {
				return fmt.Errorf("controlclient: stream idle for %s", idleTimeout)
			}
			return fmt.Errorf("controlclient: stream: %w", err)
		}
		idle.Reset(idleTimeout)
		if len(line) == 0 {
			continue // heartbeat
		}
		m, err := api.DecodeSigned(line, c.netmapKey)
		if err != nil {
			return fmt.Errorf("controlclient: refusing netmap: %w", err)
		}
		if err := h.Apply(m); err != nil {
			return fmt.Errorf("controlclient: refusing netmap v%d: %w", m.Version, err)
		}
		c.messages.Add(1)
		c.bytes.Add(uint64(len(line) + 1))
	}
}

// readLine reads one newline-terminated line of at most max bytes, without
// the newline. A longer line is an error, not a truncation.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > max+1 {
			return nil, fmt.Errorf("line exceeds %d bytes", max)
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}
