package registry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/open-lambda/ol-shim/shim/api"
)

// What a run that is not streamed prints is held until the run ends and is
// then sent as one JSON body. It is held so that no number of such runs,
// however much they print, grows the daemon past a fixed size: the first
// memOutput bytes of each stream in memory, the rest in an unlinked file
// under the state root (at most api.MaxOutput a stream, as before), and
// the body is written straight from there, base64 and all, without a copy.
// The files of all runs together take at most SpillBudget of disk; output
// past that is dropped and the result says Truncated, as past MaxOutput.

// memOutput is what a stream keeps in memory before it spills to disk.
const memOutput = 64 << 10

// SpillBudget bounds the disk that the output of runs in flight takes.
const SpillBudget = 2 << 30

// spilled is one stream's output: up to max bytes, memOutput of them in
// memory and the rest in a file.
type spilled struct {
	dir    string        // where the file goes
	budget *atomic.Int64 // bytes of files in use, across runs
	max    int64

	mem  bytes.Buffer
	f    *os.File
	size int64 // in f
	cut  bool
	err  error
}

func (s *spilled) Write(p []byte) (int, error) {
	n := len(p)
	if room := memOutput - s.mem.Len(); room > 0 {
		k := min(room, len(p))
		s.mem.Write(p[:k])
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	room := s.max - int64(s.mem.Len()) - s.size
	if room <= 0 || s.err != nil {
		s.cut = true
		return n, nil
	}
	k := min(int64(len(p)), room)
	if s.budget.Add(k) > SpillBudget {
		s.budget.Add(-k)
		s.cut = true
		return n, nil
	}
	if s.f == nil {
		fd, err := unix.Open(s.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			s.budget.Add(-k)
			s.err, s.cut = fmt.Errorf("spill a run's output: %w", err), true
			return n, nil
		}
		s.f = os.NewFile(uintptr(fd), "run-output")
	}
	w, err := s.f.Write(p[:k])
	s.size += int64(w)
	s.budget.Add(int64(w) - k)
	if err != nil || int64(len(p)) > k {
		s.cut = true
		if err != nil {
			s.err = err
		}
	}
	return n, nil
}

// Len is how many bytes it holds.
func (s *spilled) Len() int64 { return int64(s.mem.Len()) + s.size }

// writeBase64 writes what it holds, then extra, base64-encoded as one
// string, to w.
func (s *spilled) writeBase64(w io.Writer, extra []byte) error {
	enc := base64.NewEncoder(base64.StdEncoding, w)
	if _, err := enc.Write(s.mem.Bytes()); err != nil {
		return err
	}
	if s.f != nil {
		if _, err := io.Copy(enc, io.NewSectionReader(s.f, 0, s.size)); err != nil {
			return err
		}
	}
	if _, err := enc.Write(extra); err != nil {
		return err
	}
	return enc.Close()
}

// bytes returns what it holds, in memory (for callers in this process).
func (s *spilled) bytes() []byte {
	out := append([]byte(nil), s.mem.Bytes()...)
	if s.f != nil {
		b := make([]byte, s.size)
		n, _ := s.f.ReadAt(b, 0)
		out = append(out, b[:n]...)
	}
	return out
}

// close frees the file and gives its bytes back to the budget.
func (s *spilled) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
		s.budget.Add(-s.size)
		s.size = 0
	}
}

// RunOutput is the result of a run that is not streamed, with its output
// held as above. Call Close when done with it.
type RunOutput struct {
	api.RunResult // without Stdout and Stderr: see WriteJSON
	stdout        *spilled
	stderr        *spilled
	// extra is appended to stderr (the daemon's own message).
	extra []byte
}

// Result returns the whole result, output in memory.
func (o *RunOutput) Result() *api.RunResult {
	r := o.RunResult
	r.Stdout = o.stdout.bytes()
	r.Stderr = append(o.stderr.bytes(), o.extra...)
	return &r
}

// WriteJSON writes the result as api.RunResult's JSON, streaming the output
// from where it is held.
func (o *RunOutput) WriteJSON(w io.Writer) error {
	head, err := json.Marshal(struct {
		Pool     string `json:"pool"`
		Sandbox  string `json:"sandbox"`
		Outcome  string `json:"outcome"`
		ExitCode int    `json:"exit_code"`
	}{o.Pool, o.Sandbox, o.Outcome, o.ExitCode})
	if err != nil {
		return err
	}
	// head ends with '}': the output fields go in before it.
	if _, err := w.Write(head[:len(head)-1]); err != nil {
		return err
	}
	if _, err := io.WriteString(w, `,"stdout":"`); err != nil {
		return err
	}
	if err := o.stdout.writeBase64(w, nil); err != nil {
		return err
	}
	if _, err := io.WriteString(w, `","stderr":"`); err != nil {
		return err
	}
	// The daemon's message follows the command's stderr.
	if err := o.stderr.writeBase64(w, o.extra); err != nil {
		return err
	}
	tail := `"}` + "\n"
	if o.Truncated {
		tail = `","truncated":true}` + "\n"
	}
	_, err = io.WriteString(w, tail)
	return err
}

// Close frees the output's files.
func (o *RunOutput) Close() {
	o.stdout.close()
	o.stderr.close()
}
