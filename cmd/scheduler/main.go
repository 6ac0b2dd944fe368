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
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"wasessions/internal/cli"
	"wasessions/internal/config"
	"wasessions/internal/logging"
	"wasessions/internal/queue"
	"wasessions/internal/redisconn"
	"wasessions/internal/scheduler"
	"wasessions/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(cli.ExitCode(err))
	}
}

// schedulerMaxConns: the scheduler runs one count query at a time.
const schedulerMaxConns = 2

// run is the whole program, with its environment passed in. Structured
// logs go to stdout; usage text goes to stderr. It returns nil after a
// graceful stop (ctx cancelled by SIGINT or SIGTERM).
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("scheduler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: scheduler\n\nConfigured by environment variables (see README.md): CLEANUP_CRON, RESTORE_INTERVAL, REDIS_URL, DATABASE_URL or DB_*, LOG_LEVEL.")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return cli.Usage(err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return cli.Usage(fmt.Errorf("unexpected arguments: %v", fs.Args()))
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return cli.Usage(fmt.Errorf("invalid configuration: %w", err))
	}
	if err := cfg.Validate(config.Scheduler); err != nil {
		return cli.Usage(fmt.Errorf("invalid configuration: %w", err))
	}
	log := logging.New(stdout, cfg.LogLevel, string(config.Scheduler))

	rdb, err := redisconn.Open(cfg.RedisURL, cfg.RedisTLSCAFile)
	if err != nil {
		return cli.Usage(err)
	}
	defer rdb.Close()

	pool, err := store.Connect(ctx, cfg.PostgresURL(), min(cfg.DBMaxConns, schedulerMaxConns))
	if err != nil {
		return cli.Usage(err)
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
