package controlclient_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/coordinator/api"
	"github.com/mcpmesh/mcpmesh/node/controlclient"
)

func full(v uint64, peers ...string) *api.NetmapMessage {
	m := &api.NetmapMessage{Version: v, Full: true, Node: "a", Self: &api.Node{Name: "a"}, Expires: time.Unix(int64(v), 0)}
	for _, p := range peers {
		m.Peers = append(m.Peers, api.Peer{Name: p})
	}
	return m
}

func delta(from, to uint64, add []string, remove ...string) *api.NetmapMessage {
	m := &api.NetmapMessage{Version: to, From: from, Node: "a", Removed: remove}
	for _, p := range add {
		m.Peers = append(m.Peers, api.Peer{Name: p})
	}
	return m
}

func names(n *controlclient.Netmap) []string {
	var out []string
	for _, p := range n.SortedPeers() {
		out = append(out, p.Name)
	}
	return out
}

func TestNetmapAppliesFullThenDeltas(t *testing.T) {
	var nm *controlclient.Netmap
	nm, err := nm.Apply("a", full(3, "b", "c"))
	if err != nil {
		t.Fatal(err)
	}
	nm2, err := nm.Apply("a", delta(3, 5, []string{"d"}, "b"))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(nm2); len(got) != 2 || got[0] != "c" || got[1] != "d" {
		t.Fatalf("peers after delta = %v, want [c d]", got)
	}
	if got := names(nm); len(got) != 2 || got[0] != "b" {
		t.Fatalf("Apply modified the map it was called on: %v", got)
	}
	if nm2.Version != 5 {
		t.Fatalf("version %d", nm2.Version)
	}
}

func TestNetmapRefusesOlderForeignAndGappedMessages(t *testing.T) {
	var nm *controlclient.Netmap
	nm, err := nm.Apply("a", full(10, "b"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		m    *api.NetmapMessage
		want error
	}{
		{"older full map (replay)", full(9), controlclient.ErrStale},
		{"delta from another base", delta(8, 11, []string{"x"}), controlclient.ErrGap},
		{"delta going backwards", delta(10, 9, nil, "b"), controlclient.ErrStale},
		{"map for another node", &api.NetmapMessage{Version: 11, Full: true, Node: "z", Self: &api.Node{Name: "z"}}, controlclient.ErrRecipient},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next, err := nm.Apply("a", c.m)
			if !errors.Is(err, c.want) || next != nil {
				t.Fatalf("Apply = %v, %v; want %v", next, err, c.want)
			}
			if nm.Version != 10 || len(nm.Peers) != 1 {
				t.Fatal("state changed after a refused message")
			}
		})
	}
	// A delta with no map held at all.
	var empty *controlclient.Netmap
	if _, err := empty.Apply("a", delta(1, 2, nil)); !errors.Is(err, controlclient.ErrGap) {
		t.Fatalf("delta without a map: %v", err)
	}
	// A full map of the same version is a resync and is accepted.
	if _, err := nm.Apply("a", full(10, "b", "c")); err != nil {
		t.Fatalf("same-version full map: %v", err)
	}
}
