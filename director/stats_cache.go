package director

import (
	"unsafe"

	"github.com/golvs/golvs/ipvs"
)

// statCache gathers a worker's packet and byte counts per dest (and its
// service) over a batch and adds them to the shared atomic counters once
// per batch, instead of four contended atomic adds per packet. Listings
// lag by at most one batch.
type statCache struct {
	ents [16]statEnt
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
}

// in counts an inbound packet of n bytes for a dest and its service.
func (c *statCache) in(d *ipvs.Dest, svc *ipvs.Stats, n uint64) {
	e := c.slot(d, svc)
	e.inP++
	e.inB += n
}

// out counts an outbound (reply) packet.
func (c *statCache) out(d *ipvs.Dest, svc *ipvs.Stats, n uint64) {
	e := c.slot(d, svc)
	e.outP++
	e.outB += n
}
