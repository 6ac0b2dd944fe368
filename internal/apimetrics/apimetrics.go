// Package apimetrics holds the API's Prometheus instruments on a registry of
// its own (never the global one, so that several APIs can live in one test
// binary and nothing registers behind the program's back): HTTP traffic,
// sessions by status read from Postgres on each scrape, the API's enqueue
// outcomes, open event streams, and asynq's queue figures through its
// x/metrics collector. (The worker's instruments are worker.Metrics,
// served by cmd/worker on METRICS_ADDR.)
//
// The asynq collector reads Redis and the session collector reads Postgres
// on every scrape; both are bounded by a timeout, and a store that does not
// answer shows as a *_up gauge of 0 instead of failing the whole scrape, so
// /metrics keeps answering while Postgres or Redis is down.
package apimetrics

import (
	"context"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"wasessions/internal/store"
)

// Namespace prefixes the service's own metric names.
const Namespace = "wasessions"

// SessionCounter counts sessions per status; *store.Store is one.
type SessionCounter interface {
	CountByStatus(ctx context.Context) (map[store.Status]int64, error)
}

// Pinger answers whether a store is reachable.
type Pinger func(ctx context.Context) error

// Sources are what the scrape-time collectors read. Any may be nil; its
// metrics are then left out.
type Sources struct {
	Sessions SessionCounter
	// Inspector reads asynq's queues; RedisPing guards it so a Redis outage
	// costs one quick failed ping per scrape, not the inspector's retries.
	Inspector *asynq.Inspector
	RedisPing Pinger
	// Timeout bounds each scrape-time read (default 2s).
	Timeout time.Duration
	// CacheFor is how long what the scrape-time collectors read is
	// reused (default 5s; negative: never): the session counts are a
	// GROUP BY over every session, and the queue figures a walk of every
	// queue in Redis, so scrapes at any rate (several Prometheus, anyone
	// who can reach /metrics) cost at most one read per period.
	CacheFor time.Duration
}

// Metrics are the API's instruments and the registry they live on.
type Metrics struct {
	Registry *prometheus.Registry

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	enqueues     *prometheus.CounterVec
	streams      prometheus.Gauge

	// series caches the HTTP instruments' children by label values, so
	// that a request costs one map read instead of two WithLabelValues
	// (each hashes and validates the three labels and takes the vector's
	// lock): about 3% of GET /status's CPU (pprof of BenchmarkStatus).
	// The map is copied on write (seriesMu): the label set is bounded
	// (route templates, methods, status codes), so writes stop soon and
	// reads take no lock.
	series   atomic.Pointer[map[httpKey]*httpSeries]
	seriesMu sync.Mutex
}

// httpKey is one series of the HTTP instruments.
type httpKey struct {
	method, route string
	status        int
}

// httpSeries are the HTTP instruments' children for one httpKey.
type httpSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// New builds the registry with the Go runtime and process collectors, the
// HTTP and task instruments, and the scrape-time collectors for src.
func New(src Sources) *Metrics {
	if src.Timeout <= 0 {
		src.Timeout = 2 * time.Second
	}
	if src.CacheFor == 0 {
		src.CacheFor = 5 * time.Second
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "http", Name: "requests_total",
			Help: "HTTP requests answered, by method, route template and status code.",
		}, []string{"method", "route", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
			Help:    "Time to answer an HTTP request (for event streams: until the stream began), by method, route template and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route", "status"}),
		enqueues: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "api", Name: "enqueues_total",
			Help: "Tasks the API handed to asynq, by task type and outcome (enqueued, already_queued, retained, error).",
		}, []string{"type", "outcome"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "api", Name: "event_streams",
			Help: "Server-sent event streams open now.",
		}),
	}
	m.series.Store(&map[httpKey]*httpSeries{})
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.httpRequests, m.httpDuration, m.enqueues, m.streams,
	)
	if src.Sessions != nil {
		reg.MustRegister(cached(&sessionCollector{src: src.Sessions, timeout: src.Timeout}, src.CacheFor))
	}
	if src.Inspector != nil {
		reg.MustRegister(cached(&queueCollector{
			inner:   asynqmetrics.NewQueueMetricsCollector(src.Inspector),
			ping:    src.RedisPing,
			timeout: src.Timeout,
		}, src.CacheFor))
	}
	return m
}

// Handler serves the registry in the Prometheus exposition format. A
// collector that fails is reported in the body; the rest is still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// ObserveHTTP records one answered request. route is the route template
// (e.g. /api/integrations/whatsapp/status), never the raw path, so the
// label set stays bounded whatever clients send. method and route are
// only read during the call (a label keeps a copy), so they may point
// into a buffer the server reuses, as fiber's strings do.
func (m *Metrics) ObserveHTTP(method, route string, status int, d time.Duration) {
	s := m.seriesFor(method, route, status)
	s.requests.Inc()
	s.duration.Observe(d.Seconds())
}

// seriesFor is the HTTP instruments' children for the labels, made on
// first use.
func (m *Metrics) seriesFor(method, route string, status int) *httpSeries {
	k := httpKey{method: method, route: route, status: status}
	if s, ok := (*m.series.Load())[k]; ok {
		return s
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	cur := *m.series.Load()
	if s, ok := cur[k]; ok {
		return s
	}
	k.method, k.route = strings.Clone(method), strings.Clone(route)
	code := strconv.Itoa(status)
	s := &httpSeries{
		requests: m.httpRequests.WithLabelValues(k.method, k.route, code),
		duration: m.httpDuration.WithLabelValues(k.method, k.route, code),
	}
	next := maps.Clone(cur)
	next[k] = s
	m.series.Store(&next)
	return s
}

// ObserveEnqueue records what handing a task to asynq did: outcome is a
// queue.Result's String() or "error".
func (m *Metrics) ObserveEnqueue(taskType, outcome string) {
	m.enqueues.WithLabelValues(taskType, outcome).Inc()
}

// StreamOpened and StreamClosed track open event streams.
func (m *Metrics) StreamOpened() { m.streams.Inc() }

// StreamClosed is StreamOpened's counterpart.
func (m *Metrics) StreamClosed() { m.streams.Dec() }

var (
	sessionsDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "sessions"),
		"Sessions in Postgres by status, read at scrape time.", []string{"status"}, nil)
	sessionsUpDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "sessions_scrape_up"),
		"1 if the session counts could be read from Postgres during this scrape, else 0.", nil, nil)
	queueUpDesc = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "queue_scrape_up"),
		"1 if asynq's queues could be read from Redis during this scrape, else 0.", nil, nil)
)

// AllStatuses are the statuses the sessions gauge always reports (0 when
// none), so dashboards see every series from the first scrape.
var AllStatuses = []store.Status{
	store.StatusPending, store.StatusQR, store.StatusConnected, store.StatusReconnecting,
	store.StatusDisconnected, store.StatusLoggedOut, store.StatusExpired, store.StatusFailed,
}

type sessionCollector struct {
	src     SessionCounter
	timeout time.Duration
}

func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- sessionsUpDesc
}

func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	counts, err := c.src.CountByStatus(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(sessionsUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(sessionsUpDesc, prometheus.GaugeValue, 1)
	for _, st := range AllStatuses {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(counts[st]), string(st))
	}
}

// queueCollector wraps asynq's collector: it checks Redis first (the
// inspector has no context and would otherwise retry through every queue),
// and reports whether the read worked.
type queueCollector struct {
	inner   prometheus.Collector
	ping    Pinger
	timeout time.Duration
}

// Describe leaves asynq's descriptors out on purpose: asynq's own Describe
// reads every queue from Redis (it describes by collecting), which would
// make registration depend on Redis. The registry is not pedantic, so the
// undescribed asynq_* metrics are still gathered.
func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueUpDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	if c.ping != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		err := c.ping(ctx)
		cancel()
		if err != nil {
			ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 0)
			return
		}
	}
	ch <- prometheus.MustNewConstMetric(queueUpDesc, prometheus.GaugeValue, 1)
	c.inner.Collect(ch)
}

// cachedCollector replays what inner collected for ttl; concurrent
// scrapes wait for one read instead of each running their own.
type cachedCollector struct {
	inner prometheus.Collector
	ttl   time.Duration

	mu   sync.Mutex
	at   time.Time
	last []prometheus.Metric
}

func cached(inner prometheus.Collector, ttl time.Duration) prometheus.Collector {
	if ttl < 0 {
		return inner
	}
	return &cachedCollector{inner: inner, ttl: ttl}
}

func (c *cachedCollector) Describe(ch chan<- *prometheus.Desc) { c.inner.Describe(ch) }

func (c *cachedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil || time.Since(c.at) >= c.ttl {
		got := make(chan prometheus.Metric, 64)
		go func() {
			c.inner.Collect(got)
			close(got)
		}()
		c.last = c.last[:0]
		for m := range got {
			c.last = append(c.last, m)
		}
		c.at = time.Now()
	}
	for _, m := range c.last {
		ch <- m
	}
}
