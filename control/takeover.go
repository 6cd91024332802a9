package control

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvssync"
)

// A graceful restart (golvs run --takeover, or SIGUSR2 to the running
// daemon) hands the running director to a new process over the control
// socket, with no connection lost and no frame forwarded twice:
//
//	new -> old  {"op":"takeover"}
//	old -> new  hello: the model (services, marks, timeouts), the host
//	            settings to restore at exit, the old pid
//	            (the new process applies the model, starts its workers in
//	            standby and resolves its next hops)
//	new -> old  {"ready":true}          (or {"abort":"why"}: the old one
//	                                      carries on as if nothing happened)
//	            the old one parks its workers (standby: nothing forwarded)
//	old -> new  the dests (with counters), then the table in batches of
//	            binary records (templates first), then {"end":true}
//	new -> old  {"done":true}           every conn imported
//	            the old one closes and removes its socket, forgets its
//	            host settings, stops its VRRP speaker without resigning
//	            and its sync daemons, and stops
//	old -> new  {"bye":true} with the sync daemons it ran, its VRRP
//	            instances in MASTER state and its health checks' verdicts
//	            the new one leaves standby (forwards) and listens; its
//	            sync daemons and VRRP speaker start from what bye says
//	            (cmd/golvs/harun.go)
//
// Frames go unforwarded only between the old one parking and the new one
// leaving standby: the copy of the table (milliseconds for thousands of
// conns), which TCP's retransmissions cover. If the new process goes away
// before done, the old one leaves standby and carries on.

// takeoverMsg is one line of the takeover exchange (see above).
type takeoverMsg struct {
	V     int    `json:"v"`
	OK    bool   `json:"ok,omitempty"`
	Error string `json:"error,omitempty"`

	Model *director.Model               `json:"model,omitempty"`
	Host  []director.HostSetting        `json:"host,omitempty"`
	PID   int                           `json:"pid,omitempty"`
	Ready bool                          `json:"ready,omitempty"`
	Abort string                        `json:"abort,omitempty"`
	Dests []director.HandedDest         `json:"dests,omitempty"`
	Svcs  []director.HandedServiceStats `json:"svcs,omitempty"`
	Batch []byte                        `json:"batch,omitempty"` // records, recSize bytes each (recSize6 for IPv6)
	End   bool                          `json:"end,omitempty"`
	Count int                           `json:"count,omitempty"`
	Done  bool                          `json:"done,omitempty"`
	Bye   bool                          `json:"bye,omitempty"`
	// With bye: the sync daemons the old process ran, and its VRRP
	// instances that were master.
	Sync       []ipvssync.Config `json:"sync,omitempty"`
	VRRPMaster []string          `json:"vrrp_master,omitempty"`
	// With bye: the health checks' verdicts (Server.HealthHandoff).
	Health json.RawMessage `json:"health,omitempty"`
}

// Takeover timing: how long the old process waits for the new one to be
// ready (it applies the model and resolves next hops meanwhile), and for
// each step once parked.
var (
	takeoverReadyTimeout = 2 * time.Minute
	takeoverStepTimeout  = 30 * time.Second
)

// maxTakeoverLine bounds one line of the exchange (a batch is at most a
// shard's worth of records).
const maxTakeoverLine = 256 << 20

// OnHandover sets what the server calls once a successor has taken over
// (the daemon stops then).
func (s *Server) OnHandover(fn func()) { s.onHandover = fn }

// HandedOver reports whether a successor took over.
func (s *Server) HandedOver() bool { return s.handedOver.Load() }

func writeMsg(c net.Conn, m *takeoverMsg) error {
	m.V = Version
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_ = c.SetWriteDeadline(time.Now().Add(takeoverStepTimeout))
	_, err = c.Write(append(b, '\n'))
	return err
}

func readMsg(c net.Conn, r *bufio.Reader, timeout time.Duration) (*takeoverMsg, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := readLine(r, maxTakeoverLine)
	if err != nil {
		return nil, err
	}
	var m takeoverMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return nil, fmt.Errorf("control: takeover: bad message: %w", err)
	}
	if m.Error != "" {
		return nil, errors.New(m.Error)
	}
	return &m, nil
}

// serveTakeover is the old process's side.
func (s *Server) serveTakeover(c net.Conn, r *bufio.Reader) {
	if !s.takeMu.TryLock() {
		_ = writeMsg(c, &takeoverMsg{Error: "control: takeover: another takeover is in progress"})
		return
	}
	defer s.takeMu.Unlock()
	if s.handedOver.Load() {
		_ = writeMsg(c, &takeoverMsg{Error: "control: takeover: this daemon has already handed over"})
		return
	}
	m := s.D.Model()
	if err := writeMsg(c, &takeoverMsg{OK: true, Model: &m, Host: s.D.HostSettings(), PID: os.Getpid()}); err != nil {
		return
	}
	msg, err := readMsg(c, r, takeoverReadyTimeout)
	if err != nil || !msg.Ready {
		why := "no answer"
		if err != nil {
			why = err.Error()
		} else if msg.Abort != "" {
			why = msg.Abort
		}
		s.logf("control: takeover abandoned by the new process: %s", why)
		return
	}
	s.D.SetStandby(true)
	committed := false
	defer func() {
		if !committed {
			s.D.SetStandby(false)
			s.logf("control: takeover failed; forwarding again")
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), takeoverStepTimeout)
	err = s.D.WaitParked(ctx)
	cancel()
	if err != nil {
		_ = writeMsg(c, &takeoverMsg{Error: err.Error()})
		return
	}
	n, err := s.sendTable(c)
	if err != nil {
		s.logf("control: takeover: sending the table: %v", err)
		return
	}
	msg, err = readMsg(c, r, takeoverStepTimeout)
	if err != nil || !msg.Done {
		s.logf("control: takeover: the new process did not confirm: %v", err)
		return
	}
	// Committed: from here on this process never forwards again.
	committed = true
	s.handedOver.Store(true)
	s.ln.Close()
	os.Remove(s.path)
	s.D.ForgetHost()
	bye := s.handHA()
	s.logf("control: handed over %d connections to the new process", n)
	_ = writeMsg(c, bye)
	if s.onHandover != nil {
		s.onHandover()
	}
}

// handHA stops what high availability runs here for the successor to
// start: the VRRP speaker first (told to stop without resigning, and to
// tell its followers nothing more, so no role change restarts a sync
// daemon), then the sync daemons, whose sockets the successor binds. The
// bye message carries both, and the health checks' verdicts.
func (s *Server) handHA() *takeoverMsg {
	bye := &takeoverMsg{Bye: true}
	if s.vr != nil {
		ctx, cancel := context.WithTimeout(context.Background(), takeoverStepTimeout)
		names, err := s.vr.Handover(ctx)
		cancel()
		if err != nil {
			s.logf("control: takeover: VRRP: %v", err)
		}
		bye.VRRPMaster = names
	}
	if sd := s.D.Sync; sd != nil {
		bye.Sync = sd.Status()
		for _, c := range bye.Sync {
			if err := sd.Stop(c.Role); err != nil {
				s.logf("control: takeover: stopping the sync %s: %v", c.Role, err)
			}
		}
		if len(bye.Sync) > 0 {
			s.logf("control: takeover: sync daemons stopped for the new process to run")
		}
	}
	if s.HealthHandoff != nil {
		bye.Health = s.HealthHandoff()
	}
	return bye
}

// sendTable sends the dests, the services' counters and the table:
// templates first, so every conn's template is there before it.
func (s *Server) sendTable(c net.Conn) (int, error) {
	dests, index := s.D.HandedDests()
	if err := writeMsg(c, &takeoverMsg{Dests: dests, Svcs: s.D.ServiceStats()}); err != nil {
		return 0, err
	}
	n := 0
	var buf []conntrack.Record
	for _, tpl := range []bool{true, false} {
		want := func(fl uint32) bool { return (fl&conntrack.FlagTemplate != 0) == tpl }
		err := s.D.CT.Export(buf, want, func(rs []conntrack.Record) error {
			b := make([]byte, 0, len(rs)*recSize)
			for i := range rs {
				di, ok := index[rs[i].Dest]
				if rs[i].Dest != nil && !ok {
					continue // its dest left the trash: nothing can revive it
				}
				if rs[i].Dest == nil {
					di = -1
				}
				b = appendRecord(b, &rs[i], di)
				n++
			}
			return writeMsg(c, &takeoverMsg{Batch: b})
		})
		if err != nil {
			return n, err
		}
	}
	return n, writeMsg(c, &takeoverMsg{End: true, Count: n})
}

// recSize is the size of one record on the wire: three keys, the dest's
// index, method, state, flags, client link, aux, timeout and time left.
// An IPv6 record (its in key's kind has KindV6) carries its full
// addresses and its template's after them: recSize6.
const (
	recSize  = 88
	recSize6 = recSize + 64 + 32
)

// recordLen is the length of the record that starts x (at least 14
// bytes: its in key's kind byte decides).
func recordLen(x []byte) int {
	if len(x) >= 14 && x[13]&conntrack.KindV6 != 0 {
		return recSize6
	}
	return recSize
}

func putKey(b []byte, k *conntrack.Key) {
	copy(b[0:4], k.SrcIP[:])
	copy(b[4:8], k.DstIP[:])
	binary.LittleEndian.PutUint16(b[8:], k.SrcPort)
	binary.LittleEndian.PutUint16(b[10:], k.DstPort)
	b[12], b[13] = k.Proto, k.Kind
}

func getKey(b []byte) conntrack.Key {
	var k conntrack.Key
	copy(k.SrcIP[:], b[0:4])
	copy(k.DstIP[:], b[4:8])
	k.SrcPort = binary.LittleEndian.Uint16(b[8:])
	k.DstPort = binary.LittleEndian.Uint16(b[10:])
	k.Proto, k.Kind = b[12], b[13]
	return k
}

func appendRecord(b []byte, r *conntrack.Record, dest int) []byte {
	var x [recSize]byte
	putKey(x[0:], &r.In)
	putKey(x[16:], &r.Out)
	putKey(x[32:], &r.Tpl)
	binary.LittleEndian.PutUint32(x[48:], uint32(int32(dest)))
	x[52], x[53] = uint8(r.Method), r.State
	binary.LittleEndian.PutUint32(x[56:], r.Flags)
	binary.LittleEndian.PutUint32(x[60:], uint32(r.ClientIf))
	copy(x[64:70], r.ClientMAC[:])
	binary.LittleEndian.PutUint64(x[72:], r.Aux)
	binary.LittleEndian.PutUint32(x[80:], r.Timeout)
	binary.LittleEndian.PutUint32(x[84:], uint32(min(r.Expires.Milliseconds(), 1<<32-1)))
	b = append(b, x[:]...)
	if r.V6() {
		for _, a := range [][16]byte{r.A6.In.Src, r.A6.In.Dst, r.A6.Out.Src, r.A6.Out.Dst, r.TplA6.Src, r.TplA6.Dst} {
			b = append(b, a[:]...)
		}
	}
	return b
}

func decodeRecord(x []byte) (conntrack.Record, int) {
	r := conntrack.Record{
		In: getKey(x[0:]), Out: getKey(x[16:]), Tpl: getKey(x[32:]),
		Method: ipvs.Method(x[52]), State: x[53],
		Flags:    binary.LittleEndian.Uint32(x[56:]),
		ClientIf: int32(binary.LittleEndian.Uint32(x[60:])),
		Aux:      binary.LittleEndian.Uint64(x[72:]),
		Timeout:  binary.LittleEndian.Uint32(x[80:]),
		Expires:  time.Duration(binary.LittleEndian.Uint32(x[84:])) * time.Millisecond,
	}
	copy(r.ClientMAC[:], x[64:70])
	if r.V6() && len(x) >= recSize6 {
		for i, a := range []*[16]byte{&r.A6.In.Src, &r.A6.In.Dst, &r.A6.Out.Src, &r.A6.Out.Dst, &r.TplA6.Src, &r.TplA6.Dst} {
			copy(a[:], x[recSize+16*i:])
		}
	}
	return r, int(int32(binary.LittleEndian.Uint32(x[48:])))
}

// Takeover is a takeover seen from the new process: BeginTakeover reads
// the old daemon's configuration; once the new director is up (in
// standby, the model applied) Finish moves the connection table over and
// starts forwarding.
type Takeover struct {
	c    net.Conn
	r    *bufio.Reader
	Path string
	// What the old daemon runs: apply Model to the new director, adopt
	// Host (the host settings to restore when stopping).
	Model director.Model
	Host  []director.HostSetting
	PID   int // the old daemon's process id
	// Set by Finish: the sync daemons the old daemon ran and its VRRP
	// instances in MASTER state, which it stopped for this one to start.
	Sync       []ipvssync.Config
	VRRPMaster []string
	// Set by Finish: the old daemon's health verdicts (its
	// HealthHandoff), for the new health engine to adopt; nil: none.
	Health json.RawMessage
}

// TakeoverResult says what Finish moved.
type TakeoverResult struct {
	Conns   int           // entries imported (conns and templates)
	Failed  int           // entries that could not be imported
	Paused  time.Duration // from asking the old daemon to park to forwarding here
	LastErr error         // why the last failed entry failed
}

// BeginTakeover asks the daemon on path to hand over.
func BeginTakeover(path string) (*Takeover, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("control: takeover: no daemon to take over on %s: %w", path, err)
	}
	t := &Takeover{c: c, r: bufio.NewReaderSize(c, 1<<20), Path: path}
	b, _ := json.Marshal(&Request{V: Version, Op: "takeover"})
	_ = c.SetWriteDeadline(time.Now().Add(takeoverStepTimeout))
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, fmt.Errorf("control: takeover: %w", err)
	}
	m, err := readMsg(c, t.r, takeoverStepTimeout)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("control: takeover: %w", err)
	}
	if !m.OK || m.Model == nil {
		c.Close()
		return nil, errors.New("control: takeover: the daemon on " + path + " does not support takeover (an older golvs?)")
	}
	t.Model, t.Host, t.PID = *m.Model, m.Host, m.PID
	return t, nil
}

// Abort gives up: the old daemon carries on.
func (t *Takeover) Abort(why error) {
	_ = writeMsg(t.c, &takeoverMsg{Abort: why.Error()})
	t.c.Close()
}

// Finish tells the old daemon the new director d is ready, imports the
// connection table it sends, and takes d out of standby once the old one
// has committed to stop. On error before that, d stays in standby and
// the old daemon carries on.
func (t *Takeover) Finish(d *director.Director) (TakeoverResult, error) {
	defer t.c.Close()
	var res TakeoverResult
	start := time.Now()
	if err := writeMsg(t.c, &takeoverMsg{Ready: true}); err != nil {
		return res, fmt.Errorf("control: takeover: %w", err)
	}
	m, err := readMsg(t.c, t.r, takeoverStepTimeout)
	if err != nil {
		return res, fmt.Errorf("control: takeover: %w", err)
	}
	dests := m.Dests
	bound := d.BindHanded(dests)
	svcs := m.Svcs
	for {
		m, err := readMsg(t.c, t.r, takeoverStepTimeout)
		if err != nil {
			return res, fmt.Errorf("control: takeover: receiving the table: %w", err)
		}
		if m.End {
			break
		}
		for off := 0; off < len(m.Batch); {
			n := recordLen(m.Batch[off:])
			if off+n > len(m.Batch) {
				return res, fmt.Errorf("control: takeover: a batch of %d bytes is not whole records", len(m.Batch))
			}
			r, di := decodeRecord(m.Batch[off : off+n])
			off += n
			if di >= len(bound) || di < -1 || di >= 0 && bound[di] == nil {
				res.Failed++
				res.LastErr = fmt.Errorf("control: takeover: conn %v names dest %d of %d", r.In, di, len(bound))
				continue
			}
			if di >= 0 {
				r.Dest = bound[di]
			}
			if err := d.ImportConn(&r); err != nil {
				res.Failed++
				res.LastErr = err
				continue
			}
			res.Conns++
		}
	}
	for i, h := range dests {
		if bound[i] != nil {
			director.AddStats(&bound[i].Stats, h.Stats)
		}
	}
	d.AddServiceStats(svcs)
	if err := writeMsg(t.c, &takeoverMsg{Done: true, Count: res.Conns}); err != nil {
		return res, fmt.Errorf("control: takeover: %w", err)
	}
	// bye, or the old process gone (it stops forwarding before bye, and
	// a dead one forwards nothing): either way, safe to forward here. A
	// daemon that says nothing may still be deciding: stay in standby.
	m, err = readMsg(t.c, t.r, takeoverStepTimeout)
	switch {
	case err == nil && !m.Bye:
		return res, errors.New("control: takeover: the old daemon did not say bye")
	case err == nil:
		t.Sync, t.VRRPMaster, t.Health = m.Sync, m.VRRPMaster, m.Health
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET):
		return res, fmt.Errorf("control: takeover: waiting for the old daemon to stop: %w", err)
	}
	d.SetStandby(false)
	res.Paused = time.Since(start)
	return res, nil
}
