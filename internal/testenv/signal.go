package testenv

import signallog "go.mau.fi/libsignal/logger"

// libsignal (under whatsmeow) creates its package logger lazily, without
// synchronisation, on the first signature; parallel tests that create
// whatsmeow devices race on it. Production code does the same in
// internal/wa; every test package that makes devices imports testenv, so
// doing it here, during single-threaded package initialisation, covers
// them all.
func init() { signallog.Debug("testenv: libsignal logger initialised") }
