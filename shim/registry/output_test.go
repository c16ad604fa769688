package registry

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/open-lambda/ol-shim/shim/api"
)

// TestRunOutputJSON: output held in memory and spilled to a file is
// written as the same JSON a marshalled api.RunResult is, cut at max, and
// the spill budget comes back at Close.
func TestRunOutputJSON(t *testing.T) {
	var budget atomic.Int64
	dir := t.TempDir()
	for _, tc := range []struct {
		out, errOut int
		extra       string
		max         int64
	}{
		{0, 0, "", 1 << 20},
		{10, 3, "ol-shim: cannot run\n", 1 << 20},
		{memOutput + 1, memOutput * 3, "", 1 << 20},
		{3 << 20, 5, "", 1 << 20}, // cut
	} {
		o := &RunOutput{stdout: &spilled{dir: dir, budget: &budget, max: tc.max}, stderr: &spilled{dir: dir, budget: &budget, max: tc.max}, extra: []byte(tc.extra)}
		outData := bytes.Repeat([]byte("0123456789abcdef\n"), tc.out/17+1)[:tc.out]
		for p := outData; len(p) > 0; p = p[min(len(p), 1000):] {
			o.stdout.Write(p[:min(len(p), 1000)])
		}
		o.stderr.Write(bytes.Repeat([]byte{'e'}, tc.errOut))
		o.RunResult = api.RunResult{Pool: "p", Sandbox: "s", Outcome: "warm", ExitCode: 3, Truncated: o.stdout.cut || o.stderr.cut}
		var b bytes.Buffer
		if err := o.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		var got api.RunResult
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("%v: %.200s", err, b.String())
		}
		want := o.Result()
		wantOut := outData[:min(int64(len(outData)), tc.max)]
		if !bytes.Equal(got.Stdout, wantOut) || !bytes.Equal(want.Stdout, wantOut) || string(got.Stderr) != strings.Repeat("e", tc.errOut)+tc.extra ||
			got.ExitCode != 3 || got.Pool != "p" || got.Truncated != (int64(tc.out) > tc.max) {
			t.Errorf("case %+v: got %d bytes out, %d err, truncated %v", tc, len(got.Stdout), len(got.Stderr), got.Truncated)
		}
		o.Close()
		if n := budget.Load(); n != 0 {
			t.Errorf("spill budget %d after Close", n)
		}
	}
}
