package ipvssync

import (
	"errors"
	"net"
	"sync"
	"time"
)

// backup is a running backup daemon: one receive loop per thread.
type backup struct {
	d   *Daemon
	cfg Config
	ins []Receiver
	wg  sync.WaitGroup
}

func newBackup(d *Daemon, cfg Config, ins []Receiver) *backup {
	return &backup{d: d, cfg: cfg, ins: ins}
}

func (b *backup) start() {
	for _, r := range b.ins {
		b.wg.Add(1)
		go func(r Receiver) {
			defer b.wg.Done()
			b.run(r)
		}(r)
	}
}

func (b *backup) close() {
	for _, r := range b.ins {
		r.Close()
	}
	b.wg.Wait()
}

// run is sync_thread_backup: read a message into a buffer of sync_maxlen
// (a longer datagram is cut, and then dropped for its size), process it.
func (b *backup) run(r Receiver) {
	buf := make([]byte, b.cfg.MaxLen)
	dec := &Decoder{SyncID: b.cfg.SyncID}
	peer := b.cfg.Peer
	for {
		n, from, err := r.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			b.d.cnt[cntRecvErrors].Add(1)
			time.Sleep(10 * time.Millisecond) // never spin on a failing socket
			continue
		}
		if peer.IsValid() && from.Addr().Unmap() != peer {
			b.d.cnt[cntForeign].Add(1)
			continue
		}
		b.d.process(buf[:n], dec)
	}
}
