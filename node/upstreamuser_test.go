package node

import "testing"

// An upstream user is a name from the user database or a numeric uid,
// which needs no entry (containers often run servers as bare uids).
func TestUpstreamUID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"root", 0, true},
		{"0", 0, true},
		{"4242424", 4242424, true},
		{"-1", 0, false},
		{"no-such-user-here", 0, false},
		{"", 0, false},
	} {
		got, err := upstreamUID(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("upstreamUID(%q) = %d, %v; want %d (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if got := describeUID(0); got != "root (uid 0)" {
		t.Errorf("describeUID(0) = %q", got)
	}
	if got := describeUID(4242424); got != "uid 4242424" {
		t.Errorf("describeUID(4242424) = %q", got)
	}
}
