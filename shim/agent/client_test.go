package agent

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// The usual start frame, written without encoding/json, is the one
// WriteJSON writes.
func TestStartFrameIsJSON(t *testing.T) {
	for _, sio := range []Stdio{{}, {Stdin: strings.NewReader("x")}} {
		got, err := StartFrame(Start{}, sio)
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		if err := NewConn(&want).WriteJSON(KindStart, Start{Stdin: sio.Stdin != nil}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("stdin %v: StartFrame %q, WriteJSON %q", sio.Stdin != nil, got, want.Bytes())
		}
	}
	// Anything else set goes through encoding/json.
	got, err := StartFrame(Start{Argv: []string{"sh"}, TTY: true}, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte(`{"argv":["sh"],"tty":true}`)) {
		t.Fatalf("StartFrame with argv and tty: %q", got)
	}
}

// parseExit reads what the agent writes, and takes nothing that
// json.Unmarshal would read otherwise.
func TestParseExit(t *testing.T) {
	for _, x := range []Exit{{}, {Code: 1}, {Code: 137, Signal: 9}, {Code: -1}, {Code: 255, Signal: 64}} {
		b, _ := json.Marshal(x)
		got, ok := parseExit(b)
		if !ok || got != x {
			t.Fatalf("parseExit(%s) = %+v, %v; want %+v", b, got, ok, x)
		}
	}
	for _, s := range []string{``, `{}`, `{"code":01}`, `{"code":-}`, `{"code":1,"signal":}`, `{"code":1} `, `{"code":99999999999999999999}`, `{"signal":9,"code":1}`, `{"code":1,"signal":9,"x":1}`} {
		if _, ok := parseExit([]byte(s)); ok {
			t.Fatalf("parseExit(%s) took it", s)
		}
	}
}

func FuzzParseExit(f *testing.F) {
	for _, s := range []string{`{"code":0}`, `{"code":137,"signal":9}`, `{"code":-3}`, `{"code":00}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := parseExit(b)
		if !ok {
			return
		}
		var want Exit
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("parseExit(%q) = %+v, but json.Unmarshal: %v", b, got, err)
		}
		if got != want {
			t.Fatalf("parseExit(%q) = %+v, json.Unmarshal %+v", b, got, want)
		}
	})
}
