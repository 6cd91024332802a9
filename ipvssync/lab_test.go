package ipvssync_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/conntrack"
	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/internal/testutil"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/lab"
)

// haDirector is one golvs director of the HA lab, in its namespace, with
// its control socket.
type haDirector struct {
	d      *director.Director
	srv    *control.Server
	sock   string
	cancel context.CancelFunc
	done   chan struct{}
}

func startHADirector(t *testing.T, ns *lab.NS) *haDirector {
	t.Helper()
	h := &haDirector{done: make(chan struct{})}
	err := ns.Do(func() error {
		var err error
		h.d, err = director.New(director.Config{
			Interfaces: []director.Interface{{Name: lab.DirExt, ARP: true}, {Name: lab.DirInt}},
			Workers:    1, FixHost: true,
			Conntrack: conntrack.Config{Tick: 100 * time.Millisecond},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = control.NewServer(h.d)
	h.sock = filepath.Join(t.TempDir(), "golvs.sock")
	if err := h.srv.Listen(h.sock); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go h.srv.Serve(ctx)
	go func() { defer close(h.done); _ = h.d.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

// stop kills the director (its sockets close; its peers see it vanish).
func (h *haDirector) stop() {
	h.cancel()
	<-h.done
}

// adm runs golvs adm against this director and returns stdout.
func (h *haDirector) adm(t *testing.T, args ...string) string {
	t.Helper()
	t.Setenv("GOLVS_SOCKET", h.sock)
	var out, errb bytes.Buffer
	if code := control.AdmMain(args, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("golvs adm %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
	}
	return out.String()
}

// lineServer answers every line of every connection with "<name> <line>"
// (long-lived connections, unlike the lab's one-request HTTP servers).
func lineServer(t *testing.T, ns *lab.NS, name string) {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp4", ":80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := fmt.Fprintf(c, "%s %s", name, line); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// capture records the UDP datagrams to port 8848 seen on dev inside ns
// (whole Ethernet frames) until stop is called.
type capture struct {
	mu     sync.Mutex
	frames [][]byte
	stop   chan struct{}
	done   chan struct{}
}

func startCapture(t *testing.T, ns *lab.NS, dev string) *capture {
	t.Helper()
	c := &capture{stop: make(chan struct{}), done: make(chan struct{})}
	var fd int
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(uint16(unix.ETH_P_ALL)>>8 | uint16(unix.ETH_P_ALL)<<8) // htons
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		defer unix.Close(fd)
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 14+20+8 {
				continue
			}
			f := buf[:n]
			if binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[14+9] != 17 {
				continue
			}
			ihl := int(f[14]&0xf) * 4
			if 14+ihl+8 > n || binary.BigEndian.Uint16(f[14+ihl+2:]) != 8848 {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, append([]byte(nil), f...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.end)
	return c
}

func (c *capture) end() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *capture) pcap(t *testing.T) (string, int) {
	c.end()
	c.mu.Lock()
	defer c.mu.Unlock()
	path := filepath.Join(t.TempDir(), "sync.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, fr := range c.frames {
		ci := gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			t.Fatal(err)
		}
	}
	return path, len(c.frames)
}

// connRecord is one -L -c record without its expiry.
func connRecords(s *control.Server) []string {
	var out []string
	for _, c := range s.Conns() {
		c.Expires = 0
		out = append(out, fmt.Sprintf("%s %s %s %s %s", ipvsadmProto(c.Proto), c.Client, c.Virtual, c.Dest, c.State))
	}
	sort.Strings(out)
	return out
}

func ipvsadmProto(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	}
	return "IP"
}

// pdml is the part of tshark's PDML output the test reads.
type pdml struct {
	Packets []struct {
		Protos []pdmlProto `xml:"proto"`
	} `xml:"packet"`
}

type pdmlProto struct {
	Name   string      `xml:"name,attr"`
	Fields []pdmlField `xml:"field"`
}

type pdmlField struct {
	Name   string      `xml:"name,attr"`
	Show   string      `xml:"show,attr"`
	Fields []pdmlField `xml:"field"`
}

func fieldMap(fs []pdmlField) map[string]string {
	m := map[string]string{}
	for _, f := range fs {
		if f.Name != "" {
			if _, dup := m[f.Name]; !dup {
				m[f.Name] = f.Show
			}
		}
	}
	return m
}

// Two golvs directors over shared segments: real TCP traffic through the
// master; its sync messages, captured on the wire, decode in Wireshark's
// IPVS dissector (tshark) field by field as the master's table says; the
// backup's table holds the same conns (-L -c records); -L --daemon reads
// as ipvsadm's. Then the master dies and the backup is switched to master
// (as keepalived switches lvs_sync_daemon): every established connection
// carries on through it, and new ones are scheduled.
func TestSyncLab(t *testing.T) {
	testutil.RequireNetns(t)
	topo, err := lab.BuildHA(lab.Options{Suffix: lab.RandomSuffix(), RealServers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topo.Close)
	for i, rs := range topo.RS {
		lineServer(t, rs, fmt.Sprintf("rs%d", i+1))
	}
	if err := topo.SetGateway(1); err != nil {
		t.Fatal(err)
	}
	var dirs [2]*haDirector
	vip := netip.AddrPortFrom(lab.VIP, 80).String()
	for i := range dirs {
		dirs[i] = startHADirector(t, topo.Directors[i])
		for _, args := range [][]string{
			{"-A", "-t", vip, "-s", "rr"},
			{"-a", "-t", vip, "-r", lab.RIP(1).String() + ":80", "-m"},
			{"-a", "-t", vip, "-r", lab.RIP(2).String() + ":80", "-m"},
		} {
			if err := dirs[i].srv.Exec(args); err != nil {
				t.Fatal(err)
			}
		}
	}
	master, backup := dirs[0], dirs[1]
	cap := startCapture(t, topo.Directors[1], lab.DirInt)
	backup.adm(t, "--start-daemon", "backup", "--mcast-interface", lab.DirInt, "--syncid", "9")
	master.adm(t, "--start-daemon", "master", "--mcast-interface", lab.DirInt, "--syncid", "9")
	if got, want := master.adm(t, "-L", "--daemon"), "master sync daemon (mcast=int0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"; got != want {
		t.Errorf("master -L --daemon: %q, want %q", got, want)
	}
	if got, want := backup.adm(t, "-L", "--daemon"), "backup sync daemon (mcast=int0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"; got != want {
		t.Errorf("backup -L --daemon: %q, want %q", got, want)
	}
	// ipvsadm's error for a second master.
	t.Setenv("GOLVS_SOCKET", master.sock)
	var out, errb bytes.Buffer
	if code := control.AdmMain([]string{"--start-daemon", "master", "--mcast-interface", lab.DirInt}, strings.NewReader(""), &out, &errb); code != 255 || errb.String() != "Daemon has already run\n" {
		t.Errorf("second master: exit %d, %q", code, errb.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := master.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}

	// Long-lived connections through the master, one request each.
	const n = 100 // three messages: 40 + 40 + 20 records
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	ask := func(i int, msg string) (string, error) {
		c := conns[i]
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
			return "", err
		}
		return readers[i].ReadString('\n')
	}
	err = topo.Client.Do(func() error {
		for i := range conns {
			c, err := net.DialTimeout("tcp4", vip, 5*time.Second)
			if err != nil {
				return fmt.Errorf("conn %d: %w", i, err)
			}
			conns[i], readers[i] = c, bufio.NewReader(c)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range conns {
		if _, err := ask(i, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatalf("conn %d through the master: %v", i, err)
		}
	}
	// The backup's table fills (a part message waits up to 2 s).
	want := connRecords(master.srv)
	deadline := time.Now().Add(20 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		if got = connRecords(backup.srv); strings.Join(got, "\n") == strings.Join(want, "\n") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(want) != n || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("backup -L -c records (%d):\n%s\nmaster's (%d):\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
	masterConns := master.srv.Conns()
	if st := backup.adm(t, "--status"); !strings.Contains(st, "sync-conns-received") || !strings.Contains(st, "sync-installed") {
		t.Errorf("golvs adm --status of the backup lacks its sync counters:\n%s", st)
	}

	// Wireshark's IPVS dissector on what golvs put on the wire.
	checkWithTshark(t, cap, masterConns)

	// The master dies; the backup takes the gateway and becomes master.
	master.stop()
	if err := topo.SetGateway(2); err != nil {
		t.Fatal(err)
	}
	backup.adm(t, "--stop-daemon", "backup")
	backup.adm(t, "--start-daemon", "master", "--mcast-interface", lab.DirInt, "--syncid", "9")
	if err := backup.d.WaitResolved(ctx); err != nil {
		t.Fatal(err)
	}
	created := backup.d.CT.Stats().Created
	survived := 0
	for i := range conns {
		resp, err := ask(i, fmt.Sprintf("again %d", i))
		if err != nil {
			t.Errorf("conn %d after takeover: %v", i, err)
			continue
		}
		if !strings.HasSuffix(resp, fmt.Sprintf(" again %d\n", i)) {
			t.Errorf("conn %d after takeover answered %q", i, resp)
			continue
		}
		survived++
	}
	if survived != n {
		t.Fatalf("%d of %d established connections survived the takeover", survived, n)
	}
	if c := backup.d.CT.Stats().Created - created; c != 0 {
		t.Errorf("the takeover scheduled %d conns anew; the synced ones should carry them", c)
	}
	// New connections go through the new master.
	if err := topo.Client.Do(func() error {
		c, err := net.DialTimeout("tcp4", vip, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "new\n")
		_, err = bufio.NewReader(c).ReadString('\n')
		return err
	}); err != nil {
		t.Fatalf("new connection after takeover: %v", err)
	}
	for _, name := range []string{"drop-truncated", "drop-bad-size", "drop-other-syncid", "no-real-server", "send-errors"} {
		if v, _ := backup.d.Sync.Counter(name); v != 0 {
			t.Errorf("backup counter %s = %d", name, v)
		}
	}
	// One director may run both daemons.
	backup.adm(t, "--start-daemon", "backup", "--mcast-interface", lab.DirInt)
	if got := backup.adm(t, "-L", "--daemon"); !strings.HasPrefix(got, "master sync daemon (mcast=int0, syncid=9,") || !strings.Contains(got, "\nbackup sync daemon (mcast=int0, syncid=0,") {
		t.Errorf("-L --daemon with both: %q", got)
	}
}

// checkWithTshark decodes the captured sync frames with tshark's IPVS
// dissector and checks every header and record field against the
// master's table. (Wireshark 4.0's dissector reads version 1 records
// without options only: it takes an option for the next record. That is
// every record here; records with the sequence option, PE data or golvs's
// FULLNAT option are checked against the hand-built messages instead.)
func checkWithTshark(t *testing.T, cap *capture, conns []ipvsadm.Conn) {
	t.Helper()
	path, nframes := cap.pcap(t)
	if nframes == 0 {
		t.Fatal("no sync frame captured")
	}
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Log("tshark not installed (Debian package tshark): the independent decode is skipped")
		return
	}
	if out, err := exec.Command(tshark, "-G", "protocols").Output(); err != nil || !bytes.Contains(out, []byte("\tipvs\n")) {
		t.Log("this tshark has no IPVS dissector: the independent decode is skipped")
		return
	}
	out, err := exec.Command(tshark, "-r", path, "-T", "pdml", "-d", "udp.port==8848,ipvs").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var doc pdml
	if err := xml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("tshark's PDML: %v", err)
	}
	byClient := map[string]ipvsadm.Conn{}
	for _, c := range conns {
		byClient[c.Client.String()] = c
	}
	seen := map[string]bool{}
	records := 0
	for pi, p := range doc.Packets {
		var ip, udp map[string]string
		var ipvs *pdmlProto
		for i := range p.Protos {
			switch p.Protos[i].Name {
			case "ip":
				ip = fieldMap(p.Protos[i].Fields)
			case "udp":
				udp = fieldMap(p.Protos[i].Fields)
			case "ipvs":
				ipvs = &p.Protos[i]
			}
		}
		if ipvs == nil {
			t.Fatalf("frame %d: tshark found no IPVS message", pi)
		}
		if ip["ip.dst"] != "224.0.0.81" || ip["ip.ttl"] != "1" || ip["ip.src"] != lab.HADirIntIP(1).String() || udp["udp.dstport"] != "8848" {
			t.Errorf("frame %d: ip %s -> %s ttl %s, udp port %s", pi, ip["ip.src"], ip["ip.dst"], ip["ip.ttl"], udp["udp.dstport"])
		}
		h := fieldMap(ipvs.Fields)
		var recs []map[string]string
		for _, f := range ipvs.Fields {
			if f.Name == "" && strings.HasPrefix(f.Show, "Connection #") {
				recs = append(recs, fieldMap(f.Fields))
			}
		}
		size, _ := strconv.Atoi(h["ipvs.size"])
		if h["ipvs.syncid"] != "9" || h["ipvs.version"] != "1" || h["ipvs.resv"] != "00" ||
			h["ipvs.conncount"] != strconv.Itoa(len(recs)) || size != 8+36*len(recs) || udp["udp.length"] != strconv.Itoa(8+size) {
			t.Errorf("frame %d header: %v (%d records)", pi, h, len(recs))
		}
		for ri, r := range recs {
			records++
			client := r["ipvs.caddr"] + ":" + r["ipvs.cport"]
			c, ok := byClient[client]
			if !ok {
				t.Errorf("frame %d record %d: client %s is no conn of the master", pi, ri, client)
				continue
			}
			seen[client] = true
			wantF := map[string]string{
				"ipvs.type": "0", "ipvs.proto": "0x06", "ipvs.ver": "0", "ipvs.size.v1": "36",
				"ipvs.flags.v1": "0x00000000", // NAT, active (ESTABLISHED): no flag
				"ipvs.state":    "0x0001",     // ESTABLISHED
				"ipvs.vport":    strconv.Itoa(int(c.Virtual.Port())), "ipvs.dport": strconv.Itoa(int(c.Dest.Port())),
				"ipvs.fwmark": "0x00000000", "ipvs.timeout": "900",
				"ipvs.vaddr": c.Virtual.Addr().String(), "ipvs.daddr": c.Dest.Addr().String(),
			}
			for k, v := range wantF {
				if r[k] != v {
					t.Errorf("frame %d record %d (%s): %s = %q, want %q", pi, ri, client, k, r[k], v)
				}
			}
		}
	}
	if len(seen) != len(conns) {
		t.Errorf("tshark saw records for %d of the master's %d conns (%d records in %d frames)", len(seen), len(conns), records, nframes)
	}
	t.Logf("tshark decoded %d sync frames, %d records", nframes, records)
}
