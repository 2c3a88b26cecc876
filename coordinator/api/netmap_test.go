package api_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
)

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func sampleMap() *api.NetmapMessage {
	return &api.NetmapMessage{
		Version: 7, Full: true, Node: "node-a",
		Issued: time.Unix(1700000000, 0).UTC(), Expires: time.Unix(1700003600, 0).UTC(),
		Self:  &api.Node{Name: "node-a", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}},
		Peers: []api.Peer{{Name: "node-b", WireGuardKey: "k", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.2")}}},
	}
}

func TestSignedMessageRoundTrip(t *testing.T) {
	pub, priv := newKey(t)
	line, err := api.Sign(priv, sampleMap())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(line, []byte("\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("signed message must be exactly one line: %q", line)
	}
	m, err := api.DecodeSigned(bytes.TrimSuffix(line, []byte("\n")), pub)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 7 || m.Node != "node-a" || len(m.Peers) != 1 || m.Peers[0].Name != "node-b" {
		t.Fatalf("decoded %+v", m)
	}
}

func TestDecodeSignedRefusesForgeries(t *testing.T) {
	pub, priv := newKey(t)
	_, otherPriv := newKey(t)
	good, _ := api.Sign(priv, sampleMap())
	var env api.SignedMessage
	if err := json.Unmarshal(good, &env); err != nil {
		t.Fatal(err)
	}

	// Signed by another key (a forged coordinator).
	forged, _ := api.Sign(otherPriv, sampleMap())
	if _, err := api.DecodeSigned(forged, pub); !errors.Is(err, api.ErrBadSignature) {
		t.Errorf("other key: err = %v, want ErrBadSignature", err)
	}

	// The payload altered after signing: one more peer injected.
	tampered := bytes.Replace(env.Payload, []byte(`"version":7`), []byte(`"version":8`), 1)
	b, _ := json.Marshal(api.SignedMessage{Payload: tampered, Signature: env.Signature})
	if _, err := api.DecodeSigned(b, pub); !errors.Is(err, api.ErrBadSignature) {
		t.Errorf("tampered: err = %v, want ErrBadSignature", err)
	}

	// No signature at all.
	b, _ = json.Marshal(api.SignedMessage{Payload: env.Payload})
	if _, err := api.DecodeSigned(b, pub); !errors.Is(err, api.ErrMalformed) {
		t.Errorf("unsigned: err = %v, want ErrMalformed", err)
	}

	// A signature over the payload without the context prefix (so a
	// signature made for another purpose cannot be replayed as a netmap).
	raw := ed25519.Sign(priv, env.Payload)
	b, _ = json.Marshal(api.SignedMessage{Payload: env.Payload, Signature: raw})
	if _, err := api.DecodeSigned(b, pub); !errors.Is(err, api.ErrBadSignature) {
		t.Errorf("context-free signature: err = %v, want ErrBadSignature", err)
	}
}

func TestDecodeSignedRefusesMalformed(t *testing.T) {
	pub, priv := newKey(t)
	sign := func(m *api.NetmapMessage) []byte {
		b, err := api.Sign(priv, m)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.TrimSpace(b)
	}
	signPayload := func(payload string) []byte {
		// Build an envelope around arbitrary (validly signed) payload bytes.
		good := sign(sampleMap())
		var env api.SignedMessage
		_ = json.Unmarshal(good, &env)
		env.Payload = []byte(payload)
		env.Signature = signRaw(priv, env.Payload)
		b, _ := json.Marshal(env)
		return b
	}
	cases := map[string][]byte{
		"not json":           []byte("{"),
		"trailing data":      append(sign(sampleMap()), []byte(" {}")...),
		"unknown field":      []byte(`{"payload":"e30=","sig":"","extra":1}`),
		"oversized":          bytes.Repeat([]byte("x"), api.MaxNetmapMessageBytes+1),
		"payload not json":   signPayload("nope"),
		"payload unknown":    signPayload(`{"version":1,"node":"a","full":true,"evil":true}`),
		"no version":         signPayload(`{"node":"a","full":true}`),
		"no node":            signPayload(`{"version":3,"full":true}`),
		"delta without from": signPayload(`{"version":3,"node":"a"}`),
		"full with removed":  signPayload(`{"version":3,"node":"a","full":true,"removed":["b"]}`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := api.DecodeSigned(b, pub)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, api.ErrMalformed) && !errors.Is(err, api.ErrBadSignature) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if !strings.HasPrefix(err.Error(), "api: ") {
				t.Errorf("error lacks package prefix: %v", err)
			}
		})
	}
}

func signRaw(priv ed25519.PrivateKey, payload []byte) []byte {
	return ed25519.Sign(priv, append([]byte("mcpmesh netmap v1\x00"), payload...))
}

// FuzzDecodeSigned feeds arbitrary bytes to the netmap decoder: it must
// never panic, and anything it accepts must have verified under the key.
func FuzzDecodeSigned(f *testing.F) {
	pub, priv := newKey(f)
	good, _ := api.Sign(priv, sampleMap())
	f.Add(bytes.TrimSpace(good))
	delta := &api.NetmapMessage{Version: 9, From: 7, Node: "node-a", Removed: []string{"node-b"}}
	d, _ := api.Sign(priv, delta)
	f.Add(bytes.TrimSpace(d))
	f.Add([]byte(`{"payload":"","sig":""}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := api.DecodeSigned(b, pub)
		if err != nil {
			return
		}
		var env api.SignedMessage
		if json.Unmarshal(b, &env) != nil || !ed25519.Verify(pub, append([]byte("mcpmesh netmap v1\x00"), env.Payload...), env.Signature) {
			t.Fatalf("accepted a message that does not verify: %q", b)
		}
		if m.Version == 0 || m.Node == "" {
			t.Fatalf("accepted an incomplete message: %+v", m)
		}
	})
}
