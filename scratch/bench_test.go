package scratch

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkQuotaFS compares, on the same disk in one run, a FUSE-quota'd
// volume with a plain directory: sequential write and read of 1 GiB (1 MiB
// at a time, no fsync: this measures what the mount adds, not the disk),
// and 10,000 small files created, stat'ed and removed.
//
//	go test -run '^$' -bench QuotaFS -benchtime 3x ./scratch
func BenchmarkQuotaFS(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to mount FUSE")
	}
	for _, kind := range []string{"plain", "fuse"} {
		dir := func(b *testing.B) string {
			d := b.TempDir()
			if kind == "plain" {
				return d
			}
			mnt := b.TempDir()
			q, err := NewQuota(d, 4<<30, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			srv, err := MountQuota(d, mnt, q, "bench", true, false)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { srv.Unmount() })
			return mnt
		}
		const size = 1 << 30
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i)
		}
		// writeBig writes d/big: size bytes, 1 MiB at a time.
		writeBig := func(b *testing.B, d string) {
			f, err := os.Create(filepath.Join(d, "big"))
			if err != nil {
				b.Fatal(err)
			}
			for off := 0; off < size; off += len(buf) {
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(kind+"/seq-write-1GiB", func(b *testing.B) {
			d := dir(b)
			b.SetBytes(size)
			for b.Loop() {
				writeBig(b, d)
			}
		})
		b.Run(kind+"/seq-read-1GiB", func(b *testing.B) {
			d := dir(b)
			writeBig(b, d)
			b.SetBytes(size)
			b.ResetTimer()
			for b.Loop() {
				f, err := os.Open(filepath.Join(d, "big"))
				if err != nil {
					b.Fatal(err)
				}
				for {
					n, err := f.Read(buf)
					if n == 0 || err != nil {
						break
					}
				}
				f.Close()
			}
		})
		b.Run(kind+"/small-files-10k", func(b *testing.B) {
			d := dir(b)
			data := []byte("small file\n")
			for b.Loop() {
				for i := range 10_000 {
					if err := os.WriteFile(filepath.Join(d, fmt.Sprint(i)), data, 0o644); err != nil {
						b.Fatal(err)
					}
				}
				for i := range 10_000 {
					if _, err := os.Stat(filepath.Join(d, fmt.Sprint(i))); err != nil {
						b.Fatal(err)
					}
				}
				for i := range 10_000 {
					if err := os.Remove(filepath.Join(d, fmt.Sprint(i))); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
