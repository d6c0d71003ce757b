package operator

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// slowHungServerNotice is how long a connection may take to notice a hung server (its
// ping interval times one more than its outstanding pings) before New warns: Cairn's own
// connections take at most cairnjs.HungServerBound (9 s).
const slowHungServerNotice = 20 * time.Second

// checkConn warns through log about connect options of nc that keep the instance stuck
// when its server hangs or stays away: it never fails, the connection is the caller's.
func checkConn(nc *nats.Conn, log *slog.Logger) {
	o := nc.Opts
	pings := max(o.MaxPingsOut, 1)
	if notice := o.PingInterval * time.Duration(pings+1); o.PingInterval <= 0 || notice > slowHungServerNotice {
		log.Warn("the NATS connection notices a hung server (stopped, frozen, cut off without a reset) only after up to this long; meanwhile this instance neither acks nor renews its registration. Connect with nats.PingInterval(3*time.Second) and nats.MaxPingsOutstanding(2) to fail over within 9 s",
			"notice_after", notice, "ping_interval", o.PingInterval, "max_pings_outstanding", o.MaxPingsOut, "recommended_ping_interval", cairnjs.PingInterval, "recommended_max_pings_outstanding", cairnjs.MaxPingsOutstanding)
	}
	if o.MaxReconnect >= 0 {
		log.Warn("the NATS connection gives up after this many failed reconnect attempts, and the instance with it; connect with nats.MaxReconnects(-1) to reconnect for as long as the server is away",
			"max_reconnects", o.MaxReconnect)
	}
}
