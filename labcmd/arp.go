package labcmd

import (
	"fmt"
	"io"
	"net"
	"time"

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
// replies for half a second.
func arpProbe(ns *lab.NS, ifname string, src, target [4]byte) ([]net.HardwareAddr, error) {
	var out []net.HardwareAddr
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index}
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		var mac [6]byte
		copy(mac[:], ifi.HardwareAddr)
		buf := make([]byte, 60)
		bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		packet.BuildARP(buf, packet.ARPRequest, mac, bcast, mac, src, [6]byte{}, target)
		if err := unix.Sendto(fd, buf, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}); err != nil {
			return err
		}
		deadline := time.Now().Add(500 * time.Millisecond)
		seen := map[string]bool{}
		rb := make([]byte, 128)
		for time.Now().Before(deadline) {
			tv := unix.NsecToTimeval(int64(time.Until(deadline)))
			_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			n, _, err := unix.Recvfrom(fd, rb, 0)
			if err != nil {
				break
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

func htons(v uint16) uint16 { return v<<8 | v>>8 }
