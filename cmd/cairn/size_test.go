package main

import "testing"

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want int64
		ok   bool
	}{
		{"empty is the default", "", 0, true},
		{"no limit", "-1", -1, true},
		{"bytes", "1048576", 1 << 20, true},
		{"binary unit", "2GiB", 2 << 30, true},
		{"decimal unit with a space", "10 MB", 10e6, true},
		{"zero", "0", 0, false},
		{"negative", "-5", 0, false},
		{"unknown unit", "3 bananas", 0, false},
		{"overflow", "9999999999TiB", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSize("snapshot-max-bytes", tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}
