package main

import (
	"testing"
	"time"
)

func TestDaysFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"400d", 400 * 24 * time.Hour, true},
		{"1d", 24 * time.Hour, true},
		{"9600h", 9600 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"d", 0, false},
		{"-1d", 0, false},
		{"1.5d", 0, false},
		{"36501d", 0, false},
		{"-5h", 0, false},
		{"forever", 0, false},
	} {
		var d days
		err := d.Set(tc.in)
		if (err == nil) != tc.ok || tc.ok && time.Duration(d) != tc.want {
			t.Errorf("Set(%q) = %v, %v; want %v (ok %v)", tc.in, time.Duration(d), err, tc.want, tc.ok)
		}
	}
	if d := days(400 * 24 * time.Hour); d.String() != "400d" {
		t.Errorf("String = %q, want 400d", d.String())
	}
}
