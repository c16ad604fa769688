//go:build integration

package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/sandboxset"
)

// A create given up part way (its pool closed, or the client that wanted it
// gave up) leaves no container, wherever in dockerd's create it was cut:
// dockerd finishes a create whose caller went away, so removing by name
// right after the cut can come before the container exists.
func TestCreateCutShortLeavesNothing(t *testing.T) {
	e := newEnv(t)
	b := e.backend("cut", sleepSpec)
	var made, cut int
	for i := range 50 {
		id := fmt.Sprintf("cut-%d", i)
		dir, err := e.scratch.Make(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i)*5*time.Millisecond)
		sb, err := b.Create(ctx, sandboxset.Spec{ID: id, Pool: "cut", ScratchDir: dir})
		cancel()
		switch {
		case err == nil:
			made++
			if err := sb.Destroy(context.Background(), "test"); err != nil {
				t.Fatal(err)
			}
		case errors.Is(err, context.DeadlineExceeded):
			cut++
		default:
			t.Fatalf("create %s: %v", id, err)
		}
	}
	t.Logf("%d creates cut short, %d made", cut, made)
	if cut == 0 {
		t.Fatal("no create was cut short: the test tried nothing")
	}
	time.Sleep(2 * time.Second) // what dockerd finishes late
	if left := e.containers(); len(left) > 0 {
		var names []string
		for _, c := range left {
			names = append(names, c.Names...)
		}
		t.Errorf("%d containers left by creates cut short: %v", len(left), names)
	}
}

// Nor does a scratch volume's make given up part way leave a volume, in
// dockerd or in the plugin, once the failed create removed it as the pool
// does.
func TestScratchMakeCutShortLeavesNothing(t *testing.T) {
	e, m := newVolumeEnv(t)
	vs, err := e.d.VolumeScratch(nil, m.Path)
	if err != nil {
		t.Fatal(err)
	}
	var made, cut int
	for i := range 40 {
		id := fmt.Sprintf("cutvol-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i)*50*time.Microsecond)
		_, err := vs.Make(ctx, id)
		cancel()
		switch {
		case err == nil:
			made++
		case errors.Is(err, context.DeadlineExceeded):
			cut++
		default:
			t.Fatalf("make %s: %v", id, err)
		}
		if err := vs.Remove(context.Background(), id); err != nil {
			t.Fatalf("remove %s: %v", id, err)
		}
	}
	t.Logf("%d makes cut short, %d made", cut, made)
	if cut == 0 {
		t.Fatal("no make was cut short: the test tried nothing")
	}
	time.Sleep(2 * time.Second) // what dockerd finishes late
	left, err := vs.ListMade(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var inPlugin []string
	for _, v := range m.List() {
		if strings.HasPrefix(v.Name, "cutvol-") {
			inPlugin = append(inPlugin, v.Name)
		}
	}
	for name := range left {
		vs.Remove(context.Background(), name)
	}
	if len(left) > 0 || len(inPlugin) > 0 {
		t.Errorf("volumes left by makes cut short: dockerd %v, the plugin %v", left, inPlugin)
	}
}
