package main

import "testing"

func TestLocalAPIAddr(t *testing.T) {
	for _, tc := range []struct {
		advertise string
		port      int
		want      string
	}{
		{"198.18.0.1", 4242, "127.0.0.1:4242"},
		{"192.0.2.10", 5000, "127.0.0.1:5000"},
		{"2001:db8::1", 4242, "127.0.0.1:4242"},
		// Already on loopback: the API answers there, or another
		// manager of this host does.
		{"127.0.0.1", 4242, ""},
		{"127.0.0.11", 4242, ""},
		{"::1", 4242, ""},
		{"::ffff:127.0.0.1", 4242, ""},
		// A wildcard address already covers loopback.
		{"0.0.0.0", 4242, ""},
		{"::", 4242, ""},
		// Not an address: Run says so.
		{"host1", 4242, ""},
	} {
		if got := localAPIAddr(tc.advertise, tc.port); got != tc.want {
			t.Errorf("localAPIAddr(%q, %d) = %q, want %q", tc.advertise, tc.port, got, tc.want)
		}
	}
}
