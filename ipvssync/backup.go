package ipvssync

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// receiver is one backup socket.
type receiver interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	Close() error
}

// backup is a running backup daemon: one receive loop per thread.
type backup struct {
	d   *Daemon
	cfg Config
	ins []receiver
	wg  sync.WaitGroup
}

func newBackup(d *Daemon, cfg Config, ins []receiver) *backup {
	return &backup{d: d, cfg: cfg, ins: ins}
}

func (b *backup) start() {
	for _, r := range b.ins {
		b.wg.Add(1)
		go func(r receiver) {
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
func (b *backup) run(r receiver) {
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
