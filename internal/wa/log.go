package wa

import (
	"context"
	"fmt"
	"log/slog"

	waLog "go.mau.fi/whatsmeow/util/log"
)

// Logger adapts slog to whatsmeow's logger interface. whatsmeow's debug
// output includes raw protocol nodes (keys, QR refs), so it is dropped
// whatever the level; its info lines go out at debug level, warnings and
// errors as such.
type Logger struct {
	log *slog.Logger
}

// NewLogger wraps l for whatsmeow.
func NewLogger(l *slog.Logger) waLog.Logger { return Logger{log: l} }

// Errorf logs at error level.
func (l Logger) Errorf(msg string, args ...any) { l.out(slog.LevelError, msg, args) }

// Warnf logs at warn level.
func (l Logger) Warnf(msg string, args ...any) { l.out(slog.LevelWarn, msg, args) }

// Infof logs at debug level: whatsmeow's info lines are routine.
func (l Logger) Infof(msg string, args ...any) { l.out(slog.LevelDebug, msg, args) }

// Debugf drops the line: it may carry key material.
func (l Logger) Debugf(string, ...any) {}

// Sub names a whatsmeow module (e.g. "Socket", "Client").
func (l Logger) Sub(module string) waLog.Logger {
	return Logger{log: l.log.With("wa_module", module)}
}

func (l Logger) out(level slog.Level, msg string, args []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, "whatsmeow: "+fmt.Sprintf(msg, args...))
}
