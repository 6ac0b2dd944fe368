package worker

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"wasessions/internal/auth"
)

// Metrics are the worker's Prometheus instruments. They are registered on
// a registry the caller owns (cmd/worker serves it on METRICS_ADDR).
type Metrics struct {
	// Hosted is the number of whatsmeow clients this worker holds.
	Hosted prometheus.Gauge
	// Tasks counts handled tasks by type and outcome (ok, error, skipped).
	Tasks *prometheus.CounterVec
	// TaskDuration is how long handlers take, by type.
	TaskDuration *prometheus.HistogramVec
	// Restores counts restores by outcome (connected, failed, released).
	Restores *prometheus.CounterVec
	// RestoresInFlight is the number of restores connecting right now: the
	// progress of a mass restore after a restart.
	RestoresInFlight prometheus.Gauge
	// RestorePhases is where a restore that connected spent its time, by
	// phase: wait (for one of RESTORE_CONCURRENCY's slots), jitter, claim
	// (the lease, the device's keys, the client), handshake (dial and
	// Noise handshake), login (until whatsmeow reports Connected: the
	// server's success, the prekey count, the passive IQ), mark (writing
	// connected). What a mass restore is made of, to tune its pacing.
	RestorePhases *prometheus.HistogramVec
	// StatusChanges counts session status transitions written, by status
	// and reason.
	StatusChanges *prometheus.CounterVec
	// LeaseRenewals counts heartbeats by outcome (ok, error).
	LeaseRenewals *prometheus.CounterVec
	// LeasesLost counts clients stopped because their lease was lost,
	// by cause (fenced, expired_locally, taken).
	LeasesLost *prometheus.CounterVec
	// Takeover is how long a linked session was without a client when
	// another worker took it over, by kind: handoff (the previous worker
	// released it: shutdown, rebalance) measured from the release, failover
	// (its lease lapsed: the worker died) from the last heartbeat
	// (lease end minus LEASE_TTL). Both ends are Postgres timestamps read
	// against this worker's clock.
	Takeover *prometheus.HistogramVec
	// Waiting is the number of hosted sessions without a connection, by
	// what they wait on (unreachable, client_outdated, temporary_ban).
	// Many sessions waiting on client_outdated at once is an incident: no
	// newer client version is known yet.
	Waiting *prometheus.GaugeVec
	// UnreachableReleases counts sessions handed to another worker after
	// RELEASE_AFTER without a connection.
	UnreachableReleases prometheus.Counter
	// VersionFetches counts client version fetches by outcome (ok,
	// changed, error); an error keeps the last known version.
	VersionFetches *prometheus.CounterVec
}

// NewMetrics creates the instruments and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Hosted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wasessions_worker_hosted_sessions", Help: "whatsmeow clients hosted by this worker."}),
		Tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasessions_worker_tasks_total", Help: "Tasks handled, by type and outcome."}, []string{"type", "outcome"}),
		TaskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wasessions_worker_task_duration_seconds", Help: "Task handler duration, by type.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10)}, []string{"type"}),
		Restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasessions_worker_restores_total", Help: "Session restores, by outcome."}, []string{"outcome"}),
		RestoresInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wasessions_worker_restores_in_flight", Help: "Restores connecting right now."}),
		RestorePhases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wasessions_worker_restore_phase_seconds", Help: "Time a connected restore spent in each phase (wait, jitter, claim, handshake, login, mark).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14)}, []string{"phase"}),
		StatusChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasessions_worker_status_changes_total", Help: "Session status changes written, by status and reason."},
			[]string{"status", "reason"}),
		LeaseRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasessions_worker_lease_renewals_total", Help: "Lease heartbeats, by outcome."}, []string{"outcome"}),
		LeasesLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasessions_worker_leases_lost_total", Help: "Clients stopped because their lease was lost, by cause."},
			[]string{"cause"}),
		Takeover: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "wasessions_worker_takeover_seconds", Help: "Time a linked session had no client before this worker connected it, by kind (handoff, failover).",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}}, []string{"kind"}),
		Waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wasessions_worker_sessions_waiting", Help: "Hosted sessions without a connection, by what they wait on."},
			[]string{"reason"}),
		UnreachableReleases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wasessions_worker_unreachable_releases_total",
			Help: "Sessions handed to another worker after RELEASE_AFTER without a connection."}),
		VersionFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wasessions_worker_version_fetches_total", Help: "Client version fetches, by outcome (ok, changed, error)."},
			[]string{"outcome"}),
	}
	reg.MustRegister(m.Waiting, m.UnreachableReleases, m.VersionFetches, m.RestorePhases)
	reg.MustRegister(m.Hosted, m.Tasks, m.TaskDuration, m.Restores, m.RestoresInFlight, m.StatusChanges, m.LeaseRenewals, m.LeasesLost, m.Takeover)
	return m
}

// MetricsHandler is what a worker serves on METRICS_ADDR: GET /metrics
// from g, asking for the METRICS_TOKEN bearer token when one is set (the
// figures name sessions' states and the worker's load, which is nobody
// else's business), and GET /healthz, open to any prober (it says "ok"
// and nothing else). With withPprof (METRICS_PPROF, which configuration
// allows only with a token) it also serves Go's profiler under
// /debug/pprof/, behind the same token; without it that path is 404.
func MetricsHandler(g prometheus.Gatherer, token auth.MetricsToken, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", token.Protect(promhttp.HandlerFor(g, promhttp.HandlerOpts{})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	if withPprof {
		// Routes of our own: the package's init also registers them on
		// http.DefaultServeMux, which no server of this service serves.
		prof := http.NewServeMux()
		prof.HandleFunc("/debug/pprof/", pprof.Index) // heap, goroutine, allocs, ... by name
		prof.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
		prof.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", token.Protect(prof))
	}
	return mux
}
