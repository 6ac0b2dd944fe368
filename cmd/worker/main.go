// Command worker hosts whatsmeow clients for sessions: it serves the
// session tasks from its own queue (wa:w:<WORKER_ID>) and the shared one,
// keeps the leases of what it hosts, and on SIGTERM hands every session to
// the other workers without logging anything out.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	wastore "go.mau.fi/whatsmeow/store"

	"wasessions/internal/auth"
	"wasessions/internal/cli"
	"wasessions/internal/config"
	"wasessions/internal/events"
	"wasessions/internal/logging"
	"wasessions/internal/migrate"
	"wasessions/internal/queue"
	"wasessions/internal/redisconn"
	"wasessions/internal/store"
	"wasessions/internal/wa"
	"wasessions/internal/waendpoint"
	"wasessions/internal/worker"
)

func main() { cli.Main("worker", run) }

// migrateRetryWindow bounds how long start waits for Postgres.
var migrateRetryWindow = 2 * time.Minute

const usage = `usage: worker

Hosts WhatsApp sessions until SIGINT or SIGTERM, then hands them to the
other workers. Configured by environment variables (see README.md):
WORKER_ID, DATABASE_URL or DB_*, REDIS_URL, LEASE_TTL, WORKER_MAX_SESSIONS,
METRICS_ADDR, ...`

// run starts the worker and blocks until ctx ends (SIGINT/SIGTERM), then
// hands its sessions over and returns.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("worker", usage, stderr)
	if err := cli.Parse(fs, args[1:], false); err != nil {
		return err
	}
	cfg, err := config.LoadFor(getenv, config.Worker)
	if err != nil {
		return cli.Usage(err)
	}
	endpoint, err := waendpoint.Parse(cfg.WAServerAddr, cfg.WAServerPubKey)
	if err != nil {
		return cli.Usage(err)
	}
	log := logging.New(stdout, cfg.LogLevel, string(config.Worker)).With("worker_id", cfg.WorkerID)

	// Background work must outlive the signal: shutdown needs Postgres and
	// Redis to hand sessions over.
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBG()

	// On the way out the Postgres pools are closed together, waited for at
	// most stopWait: database/sql's Close waits for every query in
	// flight and pgxpool's for every connection to be given back, which
	// with a Postgres that hangs is until the network gives up (the soak
	// saw a worker run on 70 s after "worker stopped"). The process is
	// exiting; nothing is lost by not waiting.
	var closePostgres []func()
	defer func() {
		waitBounded(log, "closing the Postgres pools", stopWait, func() {
			var wg sync.WaitGroup
			for _, c := range closePostgres {
				wg.Add(1)
				go func() { defer wg.Done(); c() }()
			}
			wg.Wait()
		})
	}()
	pool, sqlDB, err := migrate.Open(ctx, cfg.PostgresURL(), cfg.DBMaxConns, log, migrateRetryWindow)
	if err != nil {
		return cli.UnlessStopped(ctx, err)
	}
	closePostgres = append(closePostgres, pool.Close, func() { _ = sqlDB.Close() })
	leasePool, err := store.Connect(bg, cfg.PostgresURL(), leasePoolConns)
	if err != nil {
		return cli.Usagef("DATABASE_URL / DB_*: %w", err)
	}
	closePostgres = append(closePostgres, leasePool.Close)
	rdb, err := redisconn.OpenSettings(cfg.Redis())
	if err != nil {
		return cli.Usage(err)
	}
	// Closed on the way out unless asynq is still shutting down in the
	// background (waitBounded): its subscriber reads a closed client's
	// channel as a nil message and panics.
	redisInUse := false
	defer func() {
		if !redisInUse {
			rdb.Close()
		}
	}()

	enq := queue.New(rdb)
	// One live process per WORKER_ID (see queue.AwaitWorkerIDFree).
	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("host name: %w", err)
	}
	self := queue.Process{Host: hostname, PID: os.Getpid(), Alive: processAlive}
	if err := enq.AwaitWorkerIDFree(ctx, cfg.WorkerID, self, workerIDWait); err != nil {
		return cli.UnlessStopped(ctx, fmt.Errorf("WORKER_ID %s: %w", cfg.WorkerID, err))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := worker.NewMetrics(reg)
	host, err := newHost(cfg, sqlDB, endpoint, metrics, log)
	if err != nil {
		return cli.Usage(err)
	}
	w, err := worker.New(worker.Config{
		WorkerID:           cfg.WorkerID,
		LeaseTTL:           cfg.LeaseTTL,
		SessionTTL:         cfg.SessionTTL,
		MaxSessions:        cfg.WorkerMaxSessions,
		RestoreConcurrency: cfg.RestoreConcurrency,
		RebalanceMaxMoves:  cfg.RebalanceMaxMoves,
		ReleaseAfter:       cfg.ReleaseAfter,
		VersionRefresh:     cfg.WAVersionRefresh,
		Pacing:             store.Pacing{PerMinute: cfg.SendRate, Burst: cfg.SendBurst},
		MessageTTL:         cfg.MessageTTL,
		MessageRetention:   cfg.MessageRetention,
	}, worker.Deps{
		Store:    store.New(pool),
		Leases:   store.New(leasePool),
		Enqueuer: enq,
		Bus:      events.NewBus(rdb),
		Host:     host,
		Metrics:  metrics,
		Log:      log,
	})
	if err != nil {
		return cli.Usage(err)
	}

	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       cfg.WorkerConcurrency,
		Queues:            w.Queues(),
		TaskCheckInterval: 200 * time.Millisecond, // quick takeover of handed-over sessions
		ShutdownTimeout:   20 * time.Second,
		RetryDelayFunc:    worker.RetryDelay,
		Logger:            logging.Asynq(log),
		LogLevel:          asynq.WarnLevel,
		HealthCheckFunc: func(err error) {
			if err != nil {
				log.Warn("redis health check failed", "error", err)
			}
		},
	})
	if err := srv.Start(w.Mux()); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	go advertiseCapacity(bg, enq, cfg.WorkerID, cfg.WorkerMaxSessions, log)
	hooks, err := newWebhooks(cfg, rdb, store.New(pool), enq, reg, log)
	if err != nil {
		srv.Shutdown()
		return cli.Usage(err)
	}
	hooksCtx, stopHooks := context.WithCancel(bg)
	defer stopHooks()
	if err := hooks.Start(hooksCtx); err != nil {
		srv.Shutdown()
		return fmt.Errorf("start webhook delivery: %w", err)
	}

	if cfg.MetricsPprof {
		// Contended locks and long waits show in /debug/pprof/mutex and
		// /debug/pprof/block only when sampled; a mass restore's wall time
		// is mostly waiting, so the profiler is of little use without them.
		runtime.SetMutexProfileFraction(pprofMutexFraction)
		runtime.SetBlockProfileRate(pprofBlockRate)
	}
	var metricsSrv *http.Server
	if cfg.MetricsAddr != "" {
		handler := worker.MetricsHandler(reg, auth.NewMetricsToken(cfg.MetricsToken), cfg.MetricsPprof)
		metricsSrv = &http.Server{Addr: cfg.MetricsAddr, Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		if cfg.MetricsToken == "" {
			log.Warn("/metrics on METRICS_ADDR has no token: set METRICS_TOKEN, or keep METRICS_ADDR on an internal address", "metrics_addr", cfg.MetricsAddr)
		}
		go func() {
			if err := metricsSrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "addr", cfg.MetricsAddr, "error", err)
			}
		}()
	}

	leases, stopLeases := context.WithCancel(bg)
	leasesDone := make(chan struct{})
	go func() { defer close(leasesDone); w.Run(leases) }()
	log.Info("worker started", "queues", w.Queues(), "endpoint", endpoint.String(),
		"lease_ttl", cfg.LeaseTTL, "max_sessions", cfg.WorkerMaxSessions, "metrics_addr", cfg.MetricsAddr, "metrics_token", cfg.MetricsToken != "", "pprof", cfg.MetricsPprof,
		"proxy", redactedProxy(cfg.WAProxy), "device_name", host.Device().Display(),
		"client_version", host.Versions().Current().String(), "version_fetch", versionSource(cfg))

	<-ctx.Done()
	log.Info("shutting down: handing sessions over", "hosted", w.Hosted())
	// asynq's Stop and Shutdown wait for its goroutines, each of which may
	// be inside a Redis call; with a Redis that hangs those calls only time
	// out, one after another (28 s with nothing to hand over, 67 s in the
	// soak). The handoff needs Postgres, not Redis, and the process exits
	// right after, so neither gets more than a few seconds.
	stopped := waitBounded(log, "asynq stop", stopWait, srv.Stop) // no new tasks from here on
	sctx, cancel := context.WithTimeout(bg, 20*time.Second)
	w.Shutdown(sctx)
	cancel()
	stopLeases()
	<-leasesDone
	shut := waitBounded(log, "asynq shutdown", stopWait, srv.Shutdown)
	stopHooks()
	hooksStopped := waitBounded(log, "webhook delivery stop", stopWait, hooks.Stop)
	redisInUse = !stopped || !shut || !hooksStopped
	if metricsSrv != nil {
		_ = metricsSrv.Close()
	}
	log.Info("worker stopped")
	return nil
}

// stopWait bounds each wait of the shutdown on something that talks
// to Redis or Postgres. With the handoff's 20 s they stay within the stop
// grace period (docker-compose.yml's stop_grace_period, 30 s) whichever
// store hangs.
const stopWait = 3 * time.Second

// waitBounded runs stop and waits for it at most d; after that it logs and
// returns false while stop goes on in the background (the process is
// exiting). A task whose handler asynq had not acknowledged is run again
// later by asynq's recoverer; every handler is safe to run twice.
func waitBounded(log *slog.Logger, what string, d time.Duration, stop func()) bool {
	done := make(chan struct{})
	go func() { defer close(done); stop() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		log.Warn("shutdown: not waiting any longer (its store slow or hanging?)", "step", what, "waited", d)
		return false
	}
}

// With METRICS_PPROF: one contended lock event in pprofMutexFraction is
// sampled, and blocking events about once per pprofBlockRate nanoseconds
// blocked (a millisecond: waits that matter to a restore, cheaply).
const (
	pprofMutexFraction = 10
	pprofBlockRate     = int(time.Millisecond)
)

// leasePoolConns is the size of the heartbeat's own Postgres pool
// (worker.Deps.Leases): one renewal at a time, and a logout's held claim
// beside it.
const leasePoolConns = 2

// workerIDWait is how long a starting worker waits for another process
// serving its WORKER_ID to go away before it refuses to start: long enough
// for the registration of a process that died elsewhere to expire (two
// asynq heartbeats, 10 s) and for one handing its sessions off after
// SIGTERM to exit (its 20 s budget).
const workerIDWait = 25 * time.Second

// processAlive reports whether a process with this PID runs on this host.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// advertiseCapacity tells the admin API (GET .../admin/workers) how many
// sessions this worker hosts at most, retrying while Redis is unreachable.
func advertiseCapacity(ctx context.Context, enq *queue.Enqueuer, workerID string, capacity int, log *slog.Logger) {
	for {
		err := enq.AdvertiseCapacity(ctx, workerID, capacity)
		if err == nil {
			return
		}
		log.Warn("could not advertise capacity; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// newHost builds the whatsmeow side of the worker: device name, proxy, and
// the client version (pinned, or fetched through the clients' own network
// path).
func newHost(cfg config.Config, db *sql.DB, endpoint waendpoint.Endpoint, m *worker.Metrics, log *slog.Logger) (*wa.Host, error) {
	pinned, err := wa.ParseVersion(cfg.WAVersion)
	if err != nil {
		return nil, fmt.Errorf("WA_VERSION: %w", err)
	}
	transport, err := wa.ProxyTransport(cfg.WAProxy)
	if err != nil {
		return nil, fmt.Errorf("WA_PROXY: %w", err)
	}
	versions := wa.NewVersions(wa.VersionOptions{
		Pinned:    pinned,
		Fetch:     versionSource(cfg) != "",
		URL:       cfg.WAVersionURL,
		Transport: transport,
		Log:       log.With("component", "wa_version"),
		Observe: func(outcome string, _ wastore.WAVersionContainer) {
			m.VersionFetches.WithLabelValues(outcome).Inc()
		},
	})
	return wa.NewHostWith(db, endpoint, log, wa.HostOptions{
		Proxy:         cfg.WAProxy,
		Versions:      versions,
		Device:        wa.DeviceName{Name: strings.TrimSpace(cfg.DeviceName), Platform: wa.Platforms[strings.ToLower(cfg.DevicePlatform)]},
		HistoryRecent: cfg.HistorySync == "recent",
	}), nil
}

// versionSource is where the worker reads the current client version, ""
// for nowhere: WA_VERSION pins one; WA_VERSION_URL names the page; without
// either, only a worker talking to the real WhatsApp reads WhatsApp's own
// page. A worker pointed at another server (the emulator, in tests and the
// demo) never fetches from the internet unless told where.
func versionSource(cfg config.Config) string {
	switch {
	case cfg.WAVersion != "":
		return ""
	case cfg.WAVersionURL != "":
		return cfg.WAVersionURL
	case cfg.WAServerAddr != "":
		return ""
	default:
		return "https://web.whatsapp.com"
	}
}

func redactedProxy(p string) string {
	if p == "" {
		return ""
	}
	return wa.RedactProxy(p)
}
