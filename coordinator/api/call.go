package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxResponseBytes bounds non-stream answers read by Do.
const maxResponseBytes = 16 << 20

// StatusError is a non-2xx answer from the coordinator, with its message.
type StatusError struct {
	Code int
	Msg  string
	// Body is the raw answer, for callers that want more than Msg (a
	// policy's list of errors).
	Body []byte
}

func (e *StatusError) Error() string { return fmt.Sprintf("coordinator: %s (HTTP %d)", e.Msg, e.Code) }

// Permanent reports whether retrying the same request cannot help
// (revoked, refused, malformed).
func (e *StatusError) Permanent() bool {
	return e.Code == http.StatusForbidden || e.Code == http.StatusUnauthorized || e.Code == http.StatusBadRequest
}

// Do performs one JSON request/response round trip of the control API: in
// is encoded as the body (when not nil), a 2xx answer is decoded into out
// (when not nil), and anything else becomes a *StatusError.
func Do(ctx context.Context, hc *http.Client, method, u string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return UnwrapURLError(err)
	}
	defer resp.Body.Close()
	return DecodeResponse(resp, out)
}

// DecodeResponse reads a bounded answer: a *StatusError for non-2xx, else
// the JSON body into out.
func DecodeResponse(resp *http.Response, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &StatusError{Code: resp.StatusCode, Msg: e.Error, Body: b}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("malformed answer: %w", err)
	}
	return nil
}

// UnwrapURLError drops net/http's `Post "url":` prefix, which repeats what
// the caller already says, but keeps the cause.
func UnwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		var tlsErr *tls.CertificateVerificationError
		if errors.As(ue.Err, &tlsErr) {
			return fmt.Errorf("coordinator's certificate: %w", tlsErr.Err)
		}
		return ue.Err
	}
	return err
}
