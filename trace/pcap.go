package trace

import (
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Pcap writes events' frames to a pcapng file: one interface block per
// director interface name, the received frame as an inbound packet on the
// event's InIf and the transmitted frame as an outbound packet on its
// OutIf, each with the frame's original length (an event keeps at most
// MaxFrame bytes) and a comment naming the event. Interfaces not declared
// up front get their block when first seen (pcapng allows an interface
// block anywhere in a section).
type Pcap struct {
	w   io.Writer
	ng  *pcapgo.NgWriter
	ids map[string]int
}

// NewPcap starts a pcapng file on w with the given interfaces declared
// (in this order; none is fine).
func NewPcap(w io.Writer, ifnames ...string) (*Pcap, error) {
	p := &Pcap{w: w, ids: map[string]int{}}
	for _, n := range ifnames {
		if _, err := p.iface(n); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func ngInterface(name string) pcapgo.NgInterface {
	return pcapgo.NgInterface{
		Name: name, OS: "linux", LinkType: layers.LinkTypeEthernet,
		Description: "golvs director interface " + name, TimestampResolution: 9,
	}
}

// iface returns the interface id of name, declaring it if new.
func (p *Pcap) iface(name string) (int, error) {
	if name == "" {
		name = "unknown"
	}
	if id, ok := p.ids[name]; ok {
		return id, nil
	}
	var id int
	var err error
	if p.ng == nil {
		opts := pcapgo.DefaultNgWriterOptions
		opts.SectionInfo.Application = "golvs trace"
		p.ng, err = pcapgo.NewNgWriterInterface(p.w, ngInterface(name), opts)
	} else {
		id, err = p.ng.AddInterface(ngInterface(name))
	}
	if err != nil {
		return 0, fmt.Errorf("trace: pcap: %w", err)
	}
	p.ids[name] = id
	return id, nil
}

// Write adds e's frames: Before inbound on InIf, After (if any) outbound
// on OutIf.
func (p *Pcap) Write(e *Event) error {
	comment := fmt.Sprintf("golvs #%d %s", e.Seq, e.Dir)
	if e.Verdict != "" {
		comment += " " + e.Verdict
	}
	if len(e.Before) > 0 {
		if err := p.packet(e.InIf, e, e.Before, e.Len, pcapgo.NgEpbFlagDirectionInbound, comment+" (received)"); err != nil {
			return err
		}
	}
	if len(e.After) > 0 {
		if err := p.packet(e.OutIf, e, e.After, e.AfterLen, pcapgo.NgEpbFlagDirectionOutbound, comment+" (sent)"); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pcap) packet(ifname string, e *Event, data []byte, length int, dir pcapgo.NgEpbFlag, comment string) error {
	id, err := p.iface(ifname)
	if err != nil {
		return err
	}
	if length < len(data) {
		length = len(data)
	}
	ci := gopacket.CaptureInfo{Timestamp: e.Time, CaptureLength: len(data), Length: length, InterfaceIndex: id}
	opts := pcapgo.NgPacketOptions{Flags: &pcapgo.NgEpbFlags{Direction: dir}, Comments: []string{comment}}
	if err := p.ng.WritePacketWithOptions(ci, data, opts); err != nil {
		return fmt.Errorf("trace: pcap: %w", err)
	}
	return nil
}

// Flush writes out what is buffered; call it before closing the file. A
// file with no events still gets its section and one interface block, so
// that readers accept it.
func (p *Pcap) Flush() error {
	if p.ng == nil {
		if _, err := p.iface("unknown"); err != nil {
			return err
		}
	}
	if err := p.ng.Flush(); err != nil {
		return fmt.Errorf("trace: pcap: %w", err)
	}
	return nil
}
