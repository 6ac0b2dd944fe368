package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"wasessions/e2e/harness"
	"wasessions/internal/testfactory"
)

// linked is a session the phone scanned.
type linked struct {
	user      string
	sessionID string
	jid       string
	phone     string
	name      string
}

func newUser() string { return uuid.NewString() }

// phoneOf is the n-th test phone number, E.164.
func phoneOf(n int) string { return fmt.Sprintf("+1555%07d", n) }

// qrOf returns the QR code a new session shows: the one POST /session
// answered with, or, if the worker had none yet, GET /qr once it has.
func (s *stack) qrOf(user string, created session) (dataURL, raw string, err error) {
	if created.QRCode != nil {
		return *created.QRCode, str(created.QRRaw), nil
	}
	err = testfactory.Poll(harness.WaitLong, 100*time.Millisecond, func() (bool, string) {
		q, r, err := s.client.qr(user)
		if err != nil {
			return false, err.Error()
		}
		if r.Status == http.StatusOK {
			dataURL, raw = q.QRCode, q.QRRaw
			return true, ""
		}
		return false, r.String()
	})
	return dataURL, raw, err
}

// linkE does what a user does: create a session through the API, point the
// phone at the QR image (decoded, as a camera would), and wait until the
// API says connected.
func (s *stack) linkE(user, phone, name string) (linked, error) {
	l := linked{user: user, phone: phone, name: name}
	sess, code, err := s.client.create(user)
	if err != nil {
		return l, err
	}
	if code != http.StatusCreated {
		return l, fmt.Errorf("create: %d, want 201 (a new session)", code)
	}
	l.sessionID = sess.SessionID
	dataURL, _, err := s.qrOf(user, sess)
	if err != nil {
		return l, fmt.Errorf("session %s: no QR: %w", l.sessionID, err)
	}
	qr, err := harness.DecodeQRDataURL(dataURL)
	if err != nil {
		return l, fmt.Errorf("session %s: %w", l.sessionID, err)
	}
	if l.jid, err = s.phone.Scan(qr, phone, name); err != nil {
		return l, fmt.Errorf("session %s: scan: %w", l.sessionID, err)
	}
	err = testfactory.Poll(harness.WaitLong, 200*time.Millisecond, func() (bool, string) {
		st, err := s.client.status(user)
		if err != nil {
			return false, err.Error()
		}
		return st.Status == "connected" && st.IsConnected && st.IsAuthenticated,
			fmt.Sprintf("status=%s reason=%s", st.Status, st.reason())
	})
	if err != nil {
		return l, fmt.Errorf("session %s: connected after the scan: %w", l.sessionID, err)
	}
	return l, nil
}

// link is linkE for the test goroutine.
func (s *stack) link(user, phone, name string) linked {
	s.T.Helper()
	l, err := s.linkE(user, phone, name)
	if err != nil {
		s.T.Fatal(err)
	}
	return l
}

// linkMany links n sessions for new users, parallel at most conc at a
// time.
func (s *stack) linkMany(n, conc int) []linked {
	s.T.Helper()
	return s.linkManyCounting(n, conc, new(atomic.Int64))
}

// linkManyCounting is linkMany that counts finished links into done (the
// scale run logs its progress).
func (s *stack) linkManyCounting(n, conc int, done *atomic.Int64) []linked {
	s.T.Helper()
	out := make([]linked, n)
	errs := make([]error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = s.linkE(newUser(), phoneOf(1000+i), fmt.Sprintf("User %d", i))
			done.Add(1)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			s.T.Fatal(err)
		}
	}
	return out
}

func sessionIDs(ls []linked) []string {
	ids := make([]string, len(ls))
	for i, l := range ls {
		ids[i] = l.sessionID
	}
	return ids
}

// waitAllConnected waits until every session in ids is connected under a
// live lease and the emulator sees as many connected devices, and returns
// how long that took.
func (s *stack) waitAllConnected(ids []string, within time.Duration) time.Duration {
	s.T.Helper()
	start := time.Now()
	s.WaitFor(fmt.Sprintf("all %d sessions connected", len(ids)), within, func() (bool, string) {
		m, err := s.ConnectedPerWorker(ids, nil)
		if err != nil {
			return false, err.Error()
		}
		return harness.Total(m) == len(ids), fmt.Sprintf("connected per worker: %v", m)
	})
	took := time.Since(start)
	s.WaitFor(fmt.Sprintf("the emulator to see %d connected devices", len(ids)), within, func() (bool, string) {
		n, err := s.phone.ConnectedDevices()
		return err == nil && n == len(ids), fmt.Sprintf("%d connected (err %v)", n, err)
	})
	return took
}

// checkHostedOnce checks that the workers' hosted gauges add up to n while
// the emulator sees exactly n connected devices: no session is hosted
// twice, none is lost. Both are read together until they agree (10 s at
// most): a session the rebalancer is moving right then (a few hundred
// milliseconds between the donor's disconnect and the receiver's login)
// is neither.
func (s *stack) checkHostedOnce(n int) {
	s.T.Helper()
	s.WaitFor(fmt.Sprintf("workers hosting %d clients in all, %d devices connected", n, n), 10*time.Second, func() (bool, string) {
		sum, per := 0, map[string]int{}
		for _, id := range s.WorkerIDs {
			if !s.Workers[id].Running() {
				continue
			}
			h, err := s.Hosted(id)
			if err != nil {
				return false, err.Error()
			}
			per[id] = h
			sum += h
		}
		c, err := s.phone.ConnectedDevices()
		return sum == n && err == nil && c == n, fmt.Sprintf("hosted per worker: %v; the emulator sees %d connected devices (err %v)", per, c, err)
	})
}
