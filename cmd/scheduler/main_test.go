package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/cli"
	"wasessions/internal/testenv"
	"wasessions/internal/testfactory"
	"wasessions/tasks"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigErrorsExitWith2(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		mention string
	}{
		{"bad cron", map[string]string{"CLEANUP_CRON": "every hour"}, nil, "CLEANUP_CRON"},
		{"six-field cron", map[string]string{"CLEANUP_CRON": "0 0 * * * *"}, nil, "CLEANUP_CRON"},
		{"unparsable interval", map[string]string{"RESTORE_INTERVAL": "often"}, nil, "RESTORE_INTERVAL"},
		{"interval too short", map[string]string{"RESTORE_INTERVAL": "10ms"}, nil, "RESTORE_INTERVAL"},
		{"not a redis url", map[string]string{"REDIS_URL": "http://127.0.0.1:6379"}, nil, "REDIS_URL"},
		{"not a postgres url", map[string]string{"DATABASE_URL": "mysql://x"}, nil, "DATABASE_URL"},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"unknown flag", nil, []string{"-x"}, "-x"},
		{"stray argument", nil, []string{"now"}, "now"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // a run that got past validation must not block the test
			err := run(ctx, append([]string{"scheduler"}, tt.args...), envOf(tt.env), &stdout, &stderr)
			if err == nil {
				t.Fatal("run accepted it")
			}
			if code := cli.ExitCode(err); code != 2 {
				t.Errorf("exit code %d, want 2 (%v)", code, err)
			}
			if !strings.Contains(err.Error()+stderr.String(), tt.mention) {
				t.Errorf("error %q (stderr %q) does not name %s", err, stderr.String(), tt.mention)
			}
		})
	}
}

// -h prints the usage and exits 0; stray arguments exit 2.
func TestCommandLine(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
	testfactory.ProgramShape(t, "scheduler", run, envOf(env))
}

// TestRunStartsAndStops runs the program against real Redis and Postgres:
// it logs the session count, enqueues the start-up reconcile, and returns
// nil when its context ends (as on SIGTERM).
func TestRunStartsAndStops(t *testing.T) {
	rdb := testenv.NewRedisDB(t)
	_, dsn := testenv.NewStore(t)
	env := map[string]string{
		"DATABASE_URL":     dsn,
		"REDIS_URL":        rdb.URL(),
		"RESTORE_INTERVAL": "1h",
		"LOG_LEVEL":        "debug",
	}
	var stdout, stderr testfactory.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"scheduler"}, envOf(env), &stdout, &stderr) }()

	c := redis.NewClient(rdb.Options())
	defer c.Close()
	in := asynq.NewInspectorFromRedisClient(c)
	var loaded map[string]any
	var reconcileQueued bool
	for deadline := time.Now().Add(30 * time.Second); loaded == nil || !reconcileQueued; {
		for _, r := range stdout.Records(t) {
			if r["msg"] == "Loaded 0 existing sessions" {
				loaded = r
			}
		}
		if infos, err := in.ListPendingTasks(tasks.QueueShared); err == nil {
			for _, info := range infos {
				reconcileQueued = reconcileQueued || info.Type == tasks.TypeSessionsReconcile
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run returned early: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no count log (%v) or no reconcile task (%v); stdout:\n%s", loaded != nil, reconcileQueued, stdout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if loaded["count"] != float64(0) || loaded["program"] != "scheduler" || loaded["level"] != "INFO" {
		t.Errorf("count record %v", loaded)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop after its context ended")
	}
}
