package main

import (
	"bytes"
	"strings"
	"testing"
)

func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"ol-shim"}, args...))
	return out.String(), err
}

func TestDemoMock(t *testing.T) {
	out, err := runApp(t, "demo", "--backend", "mock", "--rounds", "3", "--create-latency", "1ms", "--unpause-latency", "0s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1      cold", "2      warm", "3      warm", "hot 0, warm 2, cold 1; created 1, idle 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--backend", "nope"}, `--backend "nope": unknown backend (valid: mock, docker)`},
		{[]string{"demo", "--rounds", "0"}, "--rounds 0: must be at least 1"},
		{[]string{"demo", "--min-idle", "-1"}, "min idle -1 is negative"},
		{[]string{"init", "no-such-command-here"}, `ol-shim init: start "no-such-command-here"`},
		{[]string{"--socket", "/nonexistent.sock", "run", "--timeout", "-5s", "img", "true"}, "--timeout -5s: want a positive duration"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := runApp(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v; want %q", err, tc.want)
			}
		})
	}
}

// TestVersion: version prints the client's version and, from the daemon,
// the server's; with no daemon it prints the client's and says why there
// is no server's (an error: exit 1).
func TestVersion(t *testing.T) {
	out, err := runApp(t, "--socket", "/nonexistent/ol-shim.sock", "version")
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.HasPrefix(out, "Client:\n Version:") || strings.Contains(out, "Server:") {
		t.Errorf("version without a daemon: %q, %v; want the client's, and the daemon unreachable", out, err)
	}
}
