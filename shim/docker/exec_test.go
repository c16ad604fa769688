package docker

import (
	"testing"

	"github.com/moby/moby/client"

	"github.com/open-lambda/ol-shim/shim/agent"
)

// A sandbox's command can write as fast as it likes before dockerd shows
// that it started: the output held meanwhile is bounded by the host, and
// what goes past the bound flows on to the client, in order.
func TestStartGateHoldsBoundedOutput(t *testing.T) {
	mine, theirs, err := agent.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	defer theirs.Close()
	g := &startGate{c: agent.NewConn(mine)}
	const chunk, total = 4 << 10, 4 << 20
	got := make(chan int)
	go func() {
		c, n := agent.NewConn(theirs), 0
		for n < total {
			f, err := c.Read()
			if err != nil {
				break
			}
			for _, b := range f.Payload {
				if b != byte(n/chunk) {
					t.Errorf("byte %d is %d, want %d: out of order", n, b, byte(n/chunk))
				}
				n++
			}
		}
		got <- n
	}()
	for i := range total / chunk {
		p := make([]byte, chunk)
		for j := range p {
			p[j] = byte(i)
		}
		if _, err := (gatedWriter{g, agent.KindStdout}).Write(p); err != nil {
			t.Fatal(err)
		}
		g.mu.Lock()
		held := 0
		for _, f := range g.held {
			held += len(f.p)
		}
		g.mu.Unlock()
		if held > maxHeld+chunk {
			t.Fatalf("after %d bytes written, %d held before the start is known; the bound is %d", (i+1)*chunk, held, maxHeld)
		}
	}
	if n := <-got; n != total {
		t.Fatalf("the client got %d of %d bytes", n, total)
	}
	// Output that went on is the command's: it is not taken for a start
	// error however the exec ends.
	if msg, failed := g.startError(client.ExecInspectResult{ExitCode: 126}); failed {
		t.Fatalf("output that reached the client taken for a start error: %q", msg)
	}
}

// Output held until the end of an exec that never started (no pid, a
// failing code) is dockerd's reason, not the command's output.
func TestStartGateStartError(t *testing.T) {
	mine, theirs, err := agent.Pair()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	defer theirs.Close()
	g := &startGate{c: agent.NewConn(mine)}
	gatedWriter{g, agent.KindStdout}.Write([]byte("OCI runtime exec failed: exec: \"x\": executable file not found in $PATH: unknown\r\n"))
	msg, failed := g.startError(client.ExecInspectResult{ExitCode: 126})
	if !failed || startErrorCode(msg) != agent.CodeNotFound || msg[len(msg)-1] == '\n' {
		t.Fatalf("start error %q %v, code %d; want the reason, trimmed, and 127", msg, failed, startErrorCode(msg))
	}
	g2 := &startGate{c: agent.NewConn(mine)}
	gatedWriter{g2, agent.KindStdout}.Write([]byte("out\n"))
	if _, failed := g2.startError(client.ExecInspectResult{ExitCode: 126, PID: 42}); failed {
		t.Fatal("a command that ran (pid recorded) and exited 126 taken for a start error")
	}
}
