package webhook

import (
	"slices"
	"testing"
	"time"
)

// The load figures of docs/BENCHMARKS.md: inbound messages across 20
// sessions, each an event delivered to a local receiver (real HTTP on
// loopback, every request verified with the Standard Webhooks library) by
// one delivery service (WEBHOOK_CONCURRENCY 32, endpoint cap 8) on real
// Postgres and Redis.

type benchSession struct{ user, id string }

func benchSessions(e *env, n int) []benchSession {
	var ss []benchSession
	for range n {
		u, s := e.session()
		ss = append(ss, benchSession{u, s})
	}
	return ss
}

// BenchmarkDeliveryThroughput: b.N events are committed while the service
// is stopped, then it starts; deliveries per second until the receiver
// has them all.
func BenchmarkDeliveryThroughput(b *testing.B) {
	e := newEnv(b, envOpts{Options: Options{PerEndpoint: 8}, concurrency: 32, stopped: true})
	ss := benchSessions(e, 20) // before the endpoint: their creation is not delivered
	r := newReceiver(b)
	_, sec := e.endpoint("00000000-0000-0000-0000-0000000000be", r.URL(), true)
	r.setSecrets(sec)
	for i := range b.N {
		s := ss[i%len(ss)]
		e.inbound(s.user, s.id)
	}
	b.ResetTimer()
	start := time.Now()
	e.Start()
	r.waitFor(b.N, 10*time.Minute)
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}

// BenchmarkDeliveryLatency: b.N events committed one after another (one
// writer, as a worker's session loop writes); p50 and p99 from the
// commit of each change (the payload's timestamp) to the receiver's 2xx.
func BenchmarkDeliveryLatency(b *testing.B) {
	e := newEnv(b, envOpts{Options: Options{PerEndpoint: 8}, concurrency: 32})
	ss := benchSessions(e, 20)
	r := newReceiver(b)
	_, sec := e.endpoint("00000000-0000-0000-0000-0000000000bf", r.URL(), true)
	r.setSecrets(sec)
	b.ResetTimer()
	for i := range b.N {
		s := ss[i%len(ss)]
		e.inbound(s.user, s.id)
	}
	r.waitFor(b.N, 10*time.Minute)
	b.StopTimer()
	lat := make([]float64, 0, b.N)
	for _, d := range r.deliveries() {
		lat = append(lat, float64(d.At.Sub(d.Payload.Timestamp).Microseconds())/1000)
	}
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)*99/100], "p99-ms")
}
