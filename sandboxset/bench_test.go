package sandboxset

import (
	"context"
	"testing"
)

// BenchmarkGetPut measures one GetOrCreateUnpaused + Put pair on the mock
// backend with no latency: the pool's own overhead (a warm hit: unpause and
// pause are mock calls).
func BenchmarkGetPut(b *testing.B) {
	run := func(b *testing.B, parallel bool) {
		m := NewMockBackend()
		s, err := New(Config{Name: "bench", Backend: m, Scratch: DirScratch{Root: b.TempDir()}})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close(context.Background())
		ctx := context.Background()
		pair := func() {
			r, err := s.GetOrCreateUnpaused(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			if err := r.Put(); err != nil {
				b.Error(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		if !parallel {
			for b.Loop() {
				pair()
			}
			return
		}
		b.SetParallelism(32) // 32 x GOMAXPROCS(2) = 64 goroutines here
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				pair()
			}
		})
	}
	b.Run("goroutines=1", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}
