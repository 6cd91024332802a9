package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/golvs/golvs/rstun"
)

// rstunMain is `golvs rs-tun`: the userspace IPIP/GUE endpoint of a real
// server behind a TUN-mode director.
func rstunMain(args []string) int {
	fs := flag.NewFlagSet("golvs rs-tun", flag.ContinueOnError)
	ifname := fs.String("i", "eth0", "interface the tunnel packets arrive on")
	vips := fs.String("vip", "", "VIPs to accept, comma-separated (put on the TUN device)")
	dev := fs.String("dev", "golvs-tun0", "TUN device name")
	gue := fs.Uint("gue-port", 0, "also accept GUE on this UDP port (the director's --tun-port)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var vs []netip.Addr
	for _, f := range strings.Split(*vips, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "golvs rs-tun: --vip %q: %v\n", f, err)
			return 2
		}
		vs = append(vs, a)
	}
	if *gue > 65535 {
		fmt.Fprintf(os.Stderr, "golvs rs-tun: --gue-port %d out of range\n", *gue)
		return 2
	}
	e, err := rstun.Open(rstun.Config{Interface: *ifname, VIPs: vs, Device: *dev, GUEPort: uint16(*gue)})
	if err != nil {
		fmt.Fprintf(os.Stderr, "golvs rs-tun: %v\n", err)
		return 1
	}
	defer e.Close()
	for _, s := range e.Settings {
		fmt.Printf("rs-tun: set %s\n", s)
	}
	fmt.Printf("rs-tun: decapsulating IPIP%s on %s into %s\n", map[bool]string{true: fmt.Sprintf(" and GUE (udp/%d)", *gue)}[*gue != 0], *ifname, *dev)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := e.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "golvs rs-tun: %v\n", err)
		return 1
	}
	st := e.Stats()
	fmt.Printf("rs-tun: delivered %d, not for a VIP %d, malformed %d\n", st.Delivered, st.NotVIP, st.Bad)
	return 0
}

type fullnatFlags struct {
	addrs    []netip.Addr
	min, max uint16
	noTOA    bool
}

// parseFullNAT reads `golvs run --laddr A,B --lport-range 5000-65535`.
func parseFullNAT(laddr, lports string, noTOA bool) (fullnatFlags, error) {
	f := fullnatFlags{noTOA: noTOA}
	for _, s := range strings.Split(laddr, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Is4In6() || a.Zone() != "" {
			return f, fmt.Errorf("--laddr %q: not an IPv4 or IPv6 address", s)
		}
		f.addrs = append(f.addrs, a)
	}
	var lo, hi uint
	if _, err := fmt.Sscanf(lports, "%d-%d", &lo, &hi); err != nil || lo < 1 || hi > 65535 || lo > hi {
		return f, fmt.Errorf("--lport-range %q: want LOW-HIGH within 1-65535", lports)
	}
	f.min, f.max = uint16(lo), uint16(hi)
	return f, nil
}
