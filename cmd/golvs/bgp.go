package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/golvs/golvs/bgp"
	"github.com/golvs/golvs/bgp/speaker"
	"github.com/golvs/golvs/control"
	"github.com/golvs/golvs/director"
	"github.com/golvs/golvs/ipvs"
	"github.com/golvs/golvs/ipvsadm"
	"github.com/golvs/golvs/metrics"
)

// bgpFlags are golvs run's --bgp-* flags (issue 17).
type bgpFlags struct {
	asn, routerID      *string
	peers              listFlag
	hold, wait, drain  *time.Duration
	stall, connectWait *time.Duration
	gr                 *time.Duration
}

func addBGPFlags(fs *flag.FlagSet) *bgpFlags {
	b := &bgpFlags{}
	b.asn = fs.String("bgp-asn", "", "announce the VIPs over BGP from this AS number (asplain or asdot); each VIP as a host route (/32, /128) with this director as next hop while it can serve it")
	b.routerID = fs.String("bgp-router-id", "", "BGP identifier, an IPv4 address (usually the director's own); required with --bgp-asn")
	fs.Var(&b.peers, "bgp-peer", "BGP neighbour ADDR[:ASN] (no ASN: iBGP; IPv6 as [ADDR]:ASN); repeatable")
	b.hold = fs.Duration("bgp-hold-time", bgp.DefaultHoldTime, "BGP hold time proposed to peers (3s..65535s): a director that dies without closing its sessions is routed around within it")
	b.wait = fs.Duration("bgp-shutdown-wait", bgp.DefaultShutdownWait, "at shutdown, how long the routes carry the GRACEFUL_SHUTDOWN community (65535:0) before they are withdrawn")
	b.drain = fs.Duration("bgp-drain", bgp.DefaultDrain, "at shutdown, how long golvs keeps forwarding after withdrawing its routes")
	b.connectWait = fs.Duration("bgp-connect-retry", bgp.DefaultConnectRetry, "how often an unreachable or refusing BGP peer is tried again")
	b.gr = fs.Duration("bgp-graceful-restart", 0, "advertise BGP Graceful Restart (RFC 4724) with this restart time (1s..4095s; 0: off): a graceful restart of golvs (--takeover, SIGUSR2) keeps its routes at the routers instead of withdrawing and announcing them again; routers then also keep a crashed director's routes for up to this long")
	b.stall = fs.Duration("bgp-stall", bgp.DefaultStall, "withdraw the routes when a packet worker has not come round its loop for this long")
	return b
}

// config returns the speaker's configuration, nil without --bgp-asn; a
// bad value is an error naming the flag.
func (b *bgpFlags) config() (*bgp.Config, error) {
	if *b.asn == "" {
		if *b.routerID != "" || len(b.peers) > 0 {
			return nil, fmt.Errorf("--bgp-router-id and --bgp-peer need --bgp-asn")
		}
		return nil, nil
	}
	c := &bgp.Config{HoldTime: *b.hold, ConnectRetry: *b.connectWait, ShutdownWait: *b.wait, Drain: *b.drain, GracefulRestart: *b.gr}
	var err error
	if c.ASN, err = bgp.ParseASN(*b.asn); err != nil {
		return nil, fmt.Errorf("--bgp-asn: %w", err)
	}
	if *b.routerID != "" {
		if c.RouterID, err = bgp.ParseRouterID(*b.routerID); err != nil {
			return nil, fmt.Errorf("--bgp-router-id: %w", err)
		}
	}
	for _, s := range b.peers {
		p, err := bgp.ParsePeer(s)
		if err != nil {
			return nil, fmt.Errorf("--bgp-peer: %w", err)
		}
		c.Peers = append(c.Peers, p)
	}
	if *b.stall < 500*time.Millisecond || *b.stall > time.Hour {
		return nil, fmt.Errorf("--bgp-stall %v out of range (500ms..1h)", *b.stall)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// bgpRun is the running speaker and announcer.
type bgpRun struct {
	cfg  *bgp.Config
	sp   *speaker.Speaker
	ann  *bgp.Announcer
	stop context.CancelFunc // ends the announcer's loop
	done chan struct{}
}

// startBGP starts GoBGP and the announcer over the director: VIPs as the
// snapshot and the health checks' quorums say, the data path as the
// workers' heartbeats say. Routes go out once the data path runs.
func startBGP(cfg *bgp.Config, d *director.Director, srv *control.Server, health metrics.HealthSource, stall time.Duration) (*bgpRun, error) {
	sp, err := speaker.Start(*cfg)
	if err != nil {
		return nil, err
	}
	quorum := quorumFunc(health)
	wd := &bgp.Watchdog{Stall: stall}
	ann := bgp.NewAnnouncer(*cfg, sp,
		func() []bgp.VIP { return bgp.VIPsOf(d.Snapshot().List, quorum) },
		func() (bool, string) { running, beats := d.Heartbeats(); return wd.Check(running, beats, time.Now()) })
	ctx, cancel := context.WithCancel(context.Background())
	b := &bgpRun{cfg: cfg, sp: sp, ann: ann, stop: cancel, done: make(chan struct{})}
	go func() { defer close(b.done); ann.Run(ctx) }()
	srv.BGPStatus = ann.Status
	return b, nil
}

// quorumFunc reads a service's quorum from the health checks (nil: none
// watched).
func quorumFunc(health metrics.HealthSource) bgp.QuorumFunc {
	if health == nil {
		return nil
	}
	return func(k ipvs.ServiceKey) (up, known bool) {
		k = ipvsadm.NormKey(k)
		for _, q := range health.Quorums() {
			if ipvsadm.NormKey(q.Service) == k {
				return q.Up, true
			}
		}
		return false, false
	}
}

// addMetrics adds the golvs_bgp_* series to a collector.
func (b *bgpRun) addMetrics(c *metrics.Collector) *metrics.Collector {
	if b != nil {
		c.SetBGP(b.ann.Status)
	}
	return c
}

// lifetime returns the context the data path runs under: without BGP,
// ctx itself; with it, one that ends after ctx does and the routes have
// been marked GRACEFUL_SHUTDOWN, withdrawn and drained. A second
// SIGINT/SIGTERM cuts the waits short. A process that handed over to a
// successor (handedOver) with Graceful Restart configured withdraws
// nothing: its sessions end without NOTIFICATION and the routers keep
// the routes for the successor to announce again.
func (b *bgpRun) lifetime(ctx context.Context, handedOver func() bool) context.Context {
	if b == nil {
		return ctx
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	dp, stopDP := context.WithCancel(context.Background())
	go func() {
		defer stopDP()
		<-ctx.Done()
		cut, cutNow := context.WithCancel(context.Background())
		defer cutNow()
		go func() {
			defer signal.Stop(sigs)
			for n := 0; ; {
				select {
				case <-sigs:
					if n++; n >= 2 {
						cutNow()
						return
					}
				case <-cut.Done():
					return
				}
			}
		}()
		b.stop()
		<-b.done
		if handedOver() && b.cfg.GracefulRestart > 0 {
			b.sp.Handover()
			return
		}
		b.ann.Shutdown(cut)
	}()
	return dp
}

// close ends the sessions (a NOTIFICATION Cease to each peer).
func (b *bgpRun) close() {
	if b == nil {
		return
	}
	b.stop()
	<-b.done
	b.sp.Close()
}
