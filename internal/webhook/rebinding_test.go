package webhook

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"wasessions/internal/netguard"
	"wasessions/internal/store"
	"wasessions/internal/testfactory"
)

// A host that resolved to a public address at registration and to a
// private one at delivery (DNS rebinding) is refused at delivery, without
// any connection attempt: the attempt is recorded as failed with the
// reason, and retried.
func TestRebindingRefusedAtDelivery(t *testing.T) {
	res := &netguard.TableResolver{}
	res.Set("hooks.example.com", netip.MustParseAddr("93.184.216.34"))
	var dials atomic.Int32
	guard := netguard.Guard{Resolver: res, Dial: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, errors.New("test: no connection may be made")
	}}
	e := newEnv(t, envOpts{Options: Options{Schedule: []time.Duration{time.Hour}}, guard: &guard})
	u, s := e.session()
	if _, err := guard.CheckURL(e.ctx, "https://hooks.example.com/wh"); err != nil {
		t.Fatalf("registration: %v", err)
	}
	ep, _ := e.endpoint(u, "https://hooks.example.com/wh", false)
	res.Set("hooks.example.com", netip.MustParseAddr("10.0.0.7"))
	e.inbound(u, s)
	var atts []store.WebhookAttempt
	testfactory.Eventually(t, "the attempt to be recorded", func() bool {
		var err error
		atts, _, err = e.st.ListWebhookAttempts(e.ctx, ep.ID, 0, 10)
		return err == nil && len(atts) > 0
	})
	if a := atts[0]; a.Error == nil || !strings.Contains(*a.Error, "10.0.0.7 is a private address") || a.HTTPStatus != nil {
		t.Fatalf("attempt: %+v", a)
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d connections attempted to a refused address", n)
	}
}
