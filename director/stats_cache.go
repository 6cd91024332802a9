package director

import (
	"unsafe"

	"github.com/golvs/golvs/ipvs"
)

// statCache gathers a worker's packet and byte counts per dest (and its
// service) over a batch and adds them to the shared atomic counters once
// per batch, instead of four contended atomic adds per packet. Listings
// lag by at most one batch. It also sums the batch for the director-wide
// totals (/proc/net/ip_vs_stats), which, like the kernel's tot_stats, count
// every packet and conn of every service, deleted ones included.
type statCache struct {
	ents [16]statEnt
	tot  *ipvs.Stats // the director's totals; nil: not kept

	conns, inP, inB, outP, outB uint64 // for tot, since the last flush
}

type statEnt struct {
	d                    *ipvs.Dest
	svc                  *ipvs.Stats
	inP, inB, outP, outB uint64
}

func (c *statCache) slot(d *ipvs.Dest, svc *ipvs.Stats) *statEnt {
	e := &c.ents[(uintptr(unsafe.Pointer(d))>>6)&15]
	if e.d != d || e.svc != svc {
		e.flush()
		e.d, e.svc = d, svc
	}
	return e
}

func (e *statEnt) flush() {
	if e.inP != 0 {
		if e.d != nil {
			e.d.Stats.InPkts.Add(e.inP)
			e.d.Stats.InBytes.Add(e.inB)
		}
		if e.svc != nil {
			e.svc.InPkts.Add(e.inP)
			e.svc.InBytes.Add(e.inB)
		}
	}
	if e.outP != 0 {
		if e.d != nil {
			e.d.Stats.OutPkts.Add(e.outP)
			e.d.Stats.OutBytes.Add(e.outB)
		}
		if e.svc != nil {
			e.svc.OutPkts.Add(e.outP)
			e.svc.OutBytes.Add(e.outB)
		}
	}
	*e = statEnt{}
}

// flush adds everything gathered to the shared counters.
func (c *statCache) flush() {
	for i := range c.ents {
		if c.ents[i].d != nil || c.ents[i].svc != nil {
			c.ents[i].flush()
		}
	}
	if c.tot != nil {
		if c.conns != 0 {
			c.tot.Conns.Add(c.conns)
		}
		if c.inP != 0 {
			c.tot.InPkts.Add(c.inP)
			c.tot.InBytes.Add(c.inB)
		}
		if c.outP != 0 {
			c.tot.OutPkts.Add(c.outP)
			c.tot.OutBytes.Add(c.outB)
		}
	}
	c.conns, c.inP, c.inB, c.outP, c.outB = 0, 0, 0, 0, 0
}

// conn counts a new (non-template) conn for the totals; its dest's and
// service's counts are added at once by the caller.
func (c *statCache) conn() { c.conns++ }

// in counts an inbound packet of n bytes for a dest and its service.
func (c *statCache) in(d *ipvs.Dest, svc *ipvs.Stats, n uint64) {
	e := c.slot(d, svc)
	e.inP++
	e.inB += n
	c.inP++
	c.inB += n
}

// out counts an outbound (reply) packet.
func (c *statCache) out(d *ipvs.Dest, svc *ipvs.Stats, n uint64) {
	e := c.slot(d, svc)
	e.outP++
	e.outB += n
	c.outP++
	c.outB += n
}
