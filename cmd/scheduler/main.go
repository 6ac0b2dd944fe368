// Command scheduler enqueues the periodic work of wasessions: a reconcile
// pass at start and every RESTORE_INTERVAL, and the expired-session cleanup
// on CLEANUP_CRON. Any number of replicas may run; per-slot task ids make
// each slot run once (see internal/scheduler).
//
// It never exits because Redis or Postgres is down: failed enqueues are
// retried, and it does not migrate the database (api and worker do).
package main

import (
	"context"
	"fmt"
	"io"

	"wasessions/internal/cli"
	"wasessions/internal/config"
	"wasessions/internal/logging"
	"wasessions/internal/queue"
	"wasessions/internal/redisconn"
	"wasessions/internal/scheduler"
	"wasessions/internal/store"
)

func main() { cli.Main("scheduler", run) }

// schedulerMaxConns: the scheduler runs one count query at a time.
const schedulerMaxConns = 2

const usage = `usage: scheduler

Enqueues the reconcile pass and the expired-session cleanup until SIGINT or
SIGTERM. Configured by environment variables (see README.md): CLEANUP_CRON,
RESTORE_INTERVAL, REDIS_URL, DATABASE_URL or DB_*, LOG_LEVEL.`

// run is the whole program, with its environment passed in. Structured
// logs go to stdout; usage text goes to stderr. It returns nil after a
// graceful stop (ctx cancelled by SIGINT or SIGTERM).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.FlagSet("scheduler", usage, stderr)
	if err := cli.Parse(fs, args[1:], false); err != nil {
		return err
	}
	cfg, err := config.LoadFor(getenv, config.Scheduler)
	if err != nil {
		return cli.Usage(err)
	}
	log := logging.New(stdout, cfg.LogLevel, string(config.Scheduler))

	rdb, err := redisconn.OpenSettings(cfg.Redis())
	if err != nil {
		return cli.Usage(err)
	}
	defer rdb.Close()

	pool, err := store.Connect(ctx, cfg.PostgresURL(), min(cfg.DBMaxConns, schedulerMaxConns))
	if err != nil {
		return cli.Usagef("DATABASE_URL / DB_*: %w", err)
	}
	defer pool.Close()

	s, err := scheduler.New(
		scheduler.Config{CleanupCron: cfg.CleanupCron, RestoreInterval: cfg.RestoreInterval},
		scheduler.Deps{Enqueuer: queue.New(rdb), Sessions: store.New(pool), Log: log},
	)
	if err != nil {
		return cli.Usage(err)
	}
	if err := s.Run(ctx); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	return nil
}
