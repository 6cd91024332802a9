package labcmd

import (
	"fmt"
	"io"
	"net"
	"time"

	rawpacket "github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/golvs/golvs/lab"
	"github.com/golvs/golvs/packet"
)

// arpWho broadcasts one ARP request for the VIP from the client and
// prints every answer, naming the host behind each MAC.
func (s *session) arpWho(stdout io.Writer) error {
	owners := map[string]string{}
	owners[lab.MAC(0xd1, 1).String()] = "the director (golvs)"
	for i := range s.mt.RS {
		owners[lab.MAC(0x5e, byte(i+1)).String()] = fmt.Sprintf("rs%d (a real server!)", i+1)
	}
	macs, err := arpProbe(s.mt.Client, "eth0", lab.CIP.As4(), lab.VIP.As4())
	if err != nil {
		return err
	}
	if len(macs) == 0 {
		fmt.Fprintln(stdout, "  (no answer)")
	}
	for _, m := range macs {
		who := owners[m.String()]
		if who == "" {
			who = "?"
		}
		fmt.Fprintf(stdout, "  %s is-at %s  <- %s\n", lab.VIP, m, who)
	}
	return nil
}

// arpProbe sends an ARP request from ifname in ns and collects the
// replies for half a second, on a raw packet socket (mdlayher/packet)
// opened inside ns.
func arpProbe(ns *lab.NS, ifname string, src, target [4]byte) ([]net.HardwareAddr, error) {
	var out []net.HardwareAddr
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err := rawpacket.Listen(ifi, rawpacket.Raw, unix.ETH_P_ARP, nil)
		if err != nil {
			return fmt.Errorf("labcmd: ARP socket on %s: %w", ifname, err)
		}
		defer c.Close()
		var mac [6]byte
		copy(mac[:], ifi.HardwareAddr)
		buf := make([]byte, 60)
		bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		packet.BuildARP(buf, packet.ARPRequest, mac, bcast, mac, src, [6]byte{}, target)
		if _, err := c.WriteTo(buf, &rawpacket.Addr{HardwareAddr: bcast[:]}); err != nil {
			return err
		}
		if err := c.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
			return err
		}
		seen := map[string]bool{}
		rb := make([]byte, 128)
		for {
			n, _, err := c.ReadFrom(rb)
			if err != nil {
				break // the deadline
			}
			var p packet.Parsed
			packet.Decode(rb[:n], &p)
			if p.Kind != packet.KindARP {
				continue
			}
			a := packet.ARP(rb[packet.EthLen:n])
			if a.Op() != packet.ARPReply || a.SenderIP() != target {
				continue
			}
			m := a.SenderMAC()
			if !seen[string(m[:])] {
				seen[string(m[:])] = true
				out = append(out, net.HardwareAddr(append([]byte(nil), m[:]...)))
			}
		}
		return nil
	})
	return out, err
}
