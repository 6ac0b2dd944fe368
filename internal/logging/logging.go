// Package logging builds the structured logger every program uses: JSON
// lines from log/slog, one per event that matters, with session_id and
// worker_id as attributes where they apply. Secrets, QR contents and keys
// are never passed to it.
package logging

import (
	"io"
	"log/slog"
	"strings"
)

// New returns a JSON slog logger writing to w at level ("debug", "info",
// "warn", "error"; anything else means info), tagged with the program name.
func New(w io.Writer, level, program string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})).With("program", program)
}
