package logging

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/hibiken/asynq"
)

// Asynq adapts slog to asynq's logger interface, so asynq's own lines are
// structured JSON like everything else.
func Asynq(l *slog.Logger) asynq.Logger { return asynqLogger{l: l.With("component", "asynq")} }

type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) {
	a.l.Log(context.Background(), slog.LevelDebug, fmt.Sprint(args...))
}
func (a asynqLogger) Info(args ...any) {
	a.l.Log(context.Background(), slog.LevelInfo, fmt.Sprint(args...))
}
func (a asynqLogger) Warn(args ...any) {
	a.l.Log(context.Background(), slog.LevelWarn, fmt.Sprint(args...))
}
func (a asynqLogger) Error(args ...any) {
	a.l.Log(context.Background(), slog.LevelError, fmt.Sprint(args...))
}

// Fatal logs and exits, as asynq's contract for Fatal requires.
func (a asynqLogger) Fatal(args ...any) {
	a.l.Log(context.Background(), slog.LevelError, fmt.Sprint(args...))
	os.Exit(1)
}
