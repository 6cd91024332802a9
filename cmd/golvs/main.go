// Command golvs is Linux Virtual Server in userspace: one binary with
// subcommands. It only parses flags and wires packages together.
//
//	golvs run    the director (data plane and control socket)
//	golvs adm    ipvsadm's command line against a running director
//	golvs trace  watch packets cross a running director (text, JSON, pcapng)
//	golvs lab    LVS experiments in network namespaces
//	golvs rs-tun the real-server end of TUN (IPIP/GUE into a TUN device)
//	golvs bench  benchmarks of schedulers, the connection table, the data plane
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/labcmd"
)

const usage = `golvs: Linux Virtual Server in userspace (AF_PACKET, no ip_vs module needed)

usage:
  golvs run -i IFACE[:arp] [-i IFACE ...] [--rules FILE] [--rule 'ipvsadm args'] [--semantics current|classic] [flags]
            [--bgp-asn ASN --bgp-router-id ID --bgp-peer ADDR[:ASN] ...]   (announce the VIPs over BGP)
  golvs adm IPVSADM-ARGS...        (also installed as golvsadm)
  golvs adm --status [--json]      semantics and every counter of the running director
  golvs trace [tcp|udp] [client ADDR[/LEN]] [service VIP:PORT] [port N]
              [--json] [--pcap FILE] [--sample N] [--rate N] [--count N] [--duration D]
  golvs lab nat [--scheduler S] [--weights 2,1] [--requests N] [--semantics current|classic] [--keep]
  golvs lab dr|tun|fullnat [same flags as nat]
  golvs lab ha [--fail master|backup] [--conns 500] [--return] [--nopreempt] [--json]
  golvs lab request [--requests N] | golvs lab down
  golvs lab ecmp [--directors N] [--fail directorN [--json]]   (N directors behind a bird2 router, BGP + ECMP)
  golvs rs-tun -i IFACE --vip VIP[,VIP] [--gue-port N]   (real server end of TUN)
  golvs bench sched|conntrack [flags]
  golvs version

Run 'golvs COMMAND -h' for a command's flags.
`

// Version is the golvs release.
const Version = "0.1.0"

func main() {
	os.Exit(run(os.Args))
}

func run(argv []string) int {
	base := filepath.Base(argv[0])
	if base == "golvsadm" || base == "ipvsadm" {
		return control.AdmMain(argv[1:], os.Stdin, os.Stdout, os.Stderr)
	}
	if len(argv) < 2 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	args := argv[2:]
	switch argv[1] {
	case "run":
		return runMain(args)
	case "adm":
		return control.AdmMain(args, os.Stdin, os.Stdout, os.Stderr)
	case "trace":
		return traceMain(args)
	case "lab":
		return labcmd.Main(args, os.Stdout, os.Stderr)
	case "bench":
		return benchMain(args)
	case "rs-tun":
		return rstunMain(args)
	case "version", "--version", "-v":
		fmt.Printf("golvs %s (IPVS 1.2.1 compatible)\n", Version)
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "golvs: unknown command %q (golvs help lists them)\n", argv[1])
	return 2
}
