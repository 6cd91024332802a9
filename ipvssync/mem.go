package ipvssync

import (
	"net"
	"net/netip"
	"sync"
)

// MemTransport connects daemons in one process: what a master writes on
// port p reaches every backup listening on p (copied), with the MTU given.
// Tests and the sync-cost benchmark use it; it also records every message
// sent (when Record is set) and counts them. A backup that does not keep
// up loses messages (counted in Lost), as a full socket buffer would.
type MemTransport struct {
	MTU    int  // default 1500
	Record bool // keep a copy of every message in Sent

	mu   sync.Mutex
	subs map[uint16][]*memReceiver
	Sent [][]byte
	Msgs int
	Lost int
}

// Open implements Transport.
func (t *MemTransport) Open(c Config, sys Sysctls) (Config, []Sender, []Receiver, error) {
	mtu := t.MTU
	if mtu == 0 {
		mtu = 1500
	}
	cfg, err := c.fill(mtu)
	if err != nil {
		return c, nil, nil, err
	}
	var outs []Sender
	var ins []Receiver
	for id := 0; id < sys.Ports; id++ {
		port := cfg.Port + uint16(id)
		if cfg.Role == Master {
			outs = append(outs, &memSender{t: t, port: port})
			continue
		}
		r := &memReceiver{t: t, port: port, ch: make(chan []byte, 4096), done: make(chan struct{})}
		t.mu.Lock()
		if t.subs == nil {
			t.subs = map[uint16][]*memReceiver{}
		}
		t.subs[port] = append(t.subs[port], r)
		t.mu.Unlock()
		ins = append(ins, r)
	}
	return cfg, outs, ins, nil
}

// Messages returns a copy of the messages recorded so far.
func (t *MemTransport) Messages() [][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([][]byte(nil), t.Sent...)
}

type memSender struct {
	t    *MemTransport
	port uint16
}

func (s *memSender) Write(b []byte) (int, error) {
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Msgs++
	if t.Record {
		t.Sent = append(t.Sent, append([]byte(nil), b...))
	}
	for _, r := range t.subs[s.port] {
		select {
		case r.ch <- append([]byte(nil), b...):
		default:
			t.Lost++
		}
	}
	return len(b), nil
}

func (s *memSender) Close() error { return nil }

type memReceiver struct {
	t    *MemTransport
	port uint16
	ch   chan []byte
	done chan struct{}
	once sync.Once
}

var memFrom = netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), 0)

func (r *memReceiver) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	select {
	case m := <-r.ch:
		return copy(b, m), memFrom, nil
	case <-r.done:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

func (r *memReceiver) Close() error {
	r.once.Do(func() {
		close(r.done)
		t := r.t
		t.mu.Lock()
		subs := t.subs[r.port]
		for i, x := range subs {
			if x == r {
				t.subs[r.port] = append(subs[:i:i], subs[i+1:]...)
				break
			}
		}
		t.mu.Unlock()
	})
	return nil
}
