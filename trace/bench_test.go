package trace

import (
	"testing"
)

// The data path asks the tracer once per frame, and only when one is
// attached: these benchmarks show what that costs. "off" is the nil check
// the workers pay with no trace running; "filtered-out" a trace whose
// filter does not match; "sampled-1-in-100" a matching trace keeping one
// frame in 100 (the other 99 return at the sampling check); "every" a
// trace taking every frame (Want, fill, Emit, consume, Release).
func BenchmarkWant(b *testing.B) {
	client, vip := [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 100}
	frame := make([]byte, 74)

	b.Run("off", func(b *testing.B) {
		var tr *Tracer
		b.ReportAllocs()
		n := 0
		for i := 0; i < b.N; i++ {
			if tr != nil {
				if e := tr.Want(6, client, vip, 40000, 80); e != nil {
					n++
				}
			}
		}
		_ = n
	})
	b.Run("filtered-out", func(b *testing.B) {
		f, _ := ParseFilter("udp")
		tr := New(Config{Filter: f})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if e := tr.Want(6, client, vip, 40000, 80); e != nil {
				b.Fatal("matched")
			}
		}
	})
	b.Run("sampled-1-in-100", func(b *testing.B) {
		tr := New(Config{Sample: 100, Rate: 1 << 30})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if e := tr.Want(6, client, vip, 40000, 80); e != nil {
				e.SetBefore(frame)
				tr.Emit(e)
				tr.Release(<-tr.Events())
			}
		}
	})
	b.Run("every", func(b *testing.B) {
		tr := New(Config{Rate: 1 << 30})
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if e := tr.Want(6, client, vip, 40000, 80); e != nil {
				e.SetBefore(frame)
				e.SetAfter(frame)
				tr.Emit(e)
				tr.Release(<-tr.Events())
			}
		}
	})
}

// The hot-path calls allocate nothing (STYLE habit 4).
func TestWantAllocs(t *testing.T) {
	client, vip := [4]byte{198, 18, 0, 10}, [4]byte{198, 18, 0, 100}
	frame := make([]byte, 74)
	tr := New(Config{Sample: 2, Rate: 1 << 30})
	n := testing.AllocsPerRun(1000, func() {
		if e := tr.Want(6, client, vip, 40000, 80); e != nil {
			e.SetBefore(frame)
			s := e.SchedSlot()
			s.Name = "wlc"
			tr.Emit(e)
			tr.Release(<-tr.Events())
		}
	})
	if n != 0 {
		t.Fatalf("got %v allocations per frame, want 0", n)
	}
}

// Formatting is the consumer's cost, off the data path: shown for scale.
func BenchmarkFormat(b *testing.B) {
	e := modeEvents(b)[0].e
	f := &Formatter{}
	var sink discard
	b.Run("text", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_ = f.WriteText(&sink, e)
		}
	})
	b.Run("json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			_ = f.WriteJSON(&sink, e)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
