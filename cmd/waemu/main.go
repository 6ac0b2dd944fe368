// Command waemu runs the WhatsApp protocol emulator (internal/waemu): a
// server the unmodified whatsmeow client pairs with and logs in to, plus a
// JSON control API that plays the phone (scan a QR, enter a code) and breaks
// things on request (unlink, drop, refuse logins).
//
//	waemu -listen HOST:PORT -control HOST:PORT [-state FILE] [-key-seed HEX]
//	      [-qr-refs N] [-qr-timeout DURATION] [-log-level LEVEL] [-pprof HOST:PORT]
//
// Every flag can also come from the environment (WAEMU_LISTEN,
// WAEMU_CONTROL, WAEMU_STATE, WAEMU_KEY_SEED, WAEMU_QR_REFS,
// WAEMU_QR_TIMEOUT, WAEMU_LOG_LEVEL, WAEMU_PPROF); flags win. -pprof
// serves Go's profiler (/debug/pprof/) on an address of its own, so the
// scale harness can see what the emulator's side of a mass restore costs. Once listening it prints
// one JSON line to stdout with the bound addresses and the root key clients
// must trust, e.g.
//
//	{"listen":"127.0.0.1:5280","control":"127.0.0.1:5281","pubkey":"ab12..."}
//
// Logs go to stderr. SIGINT or SIGTERM closes every connection, saves the
// state file and exits 0.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"wasessions/internal/cli"
	"wasessions/internal/waemu"
)

func main() { cli.Main("waemu", run) }

// ready is the line printed once the emulator listens.
type ready struct {
	Listen  string `json:"listen"`
	Control string `json:"control"`
	PubKey  string `json:"pubkey"`
}

// run parses args (with defaults from getenv), runs the emulator until ctx
// is done and shuts it down cleanly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := cli.FlagSet("waemu", "usage: waemu [flags]\n\nThe WhatsApp protocol emulator: serves until SIGINT or SIGTERM, then saves -state.\nEvery flag can also come from the environment (WAEMU_LISTEN, ...); flags win.", stderr)
	listen := fs.String("listen", env("WAEMU_LISTEN", "127.0.0.1:5280"), "`host:port` of the protocol websocket (/ws/chat, plain HTTP)")
	control := fs.String("control", env("WAEMU_CONTROL", "127.0.0.1:5281"), "`host:port` of the JSON control API")
	state := fs.String("state", env("WAEMU_STATE", ""), "JSON `file` keeping devices and keys across restarts (default: memory only)")
	seedHex := fs.String("key-seed", env("WAEMU_KEY_SEED", ""), "`hex` seed of the root key, so clients keep trusting a restarted emulator (default: from -state, else random)")
	qrRefs := fs.String("qr-refs", env("WAEMU_QR_REFS", strconv.Itoa(waemu.DefaultQRRefs)), "pair-device refs per pairing `N` (1-100; 6 like WhatsApp)")
	qrTimeout := fs.String("qr-timeout", env("WAEMU_QR_TIMEOUT", "0"), "close unpaired connections this `duration` after their QR refs (0: never)")
	logLevel := fs.String("log-level", env("WAEMU_LOG_LEVEL", "info"), "`level`: debug, info, warn or error")
	pprofAddr := fs.String("pprof", env("WAEMU_PPROF", ""), "`host:port` to serve Go's profiler on (/debug/pprof/; default: not served)")
	if err := cli.Parse(fs, args[1:], false); err != nil {
		return err
	}

	opts := waemu.Options{ListenAddr: *listen, ControlAddr: *control, StatePath: *state}
	if *listen == "" || *control == "" {
		return cli.Usage(errors.New("-listen and -control must not be empty"))
	}
	if *seedHex != "" {
		seed, err := hex.DecodeString(*seedHex)
		if err != nil || len(seed) == 0 {
			return cli.Usage(fmt.Errorf("-key-seed %q is not hex", *seedHex))
		}
		opts.KeySeed = seed
	}
	n, err := strconv.Atoi(*qrRefs)
	if err != nil || n < 1 || n > 100 {
		return cli.Usage(fmt.Errorf("-qr-refs %q must be a number from 1 to 100", *qrRefs))
	}
	opts.QRRefs = n
	d, err := time.ParseDuration(*qrTimeout)
	if err != nil || d < 0 {
		return cli.Usage(fmt.Errorf("-qr-timeout %q is not a duration >= 0", *qrTimeout))
	}
	opts.QRTimeout = d
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cli.Usage(fmt.Errorf("-log-level %q: %w", *logLevel, err))
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	// The emulator is closed below, not by ctx, so its error is reported.
	emu, err := waemu.Start(context.WithoutCancel(ctx), opts)
	if err != nil {
		return err
	}
	if *pprofAddr != "" {
		stop, err := serveProfiler(*pprofAddr, opts.Logger)
		if err != nil {
			emu.Close()
			return err
		}
		defer stop()
	}
	pub := emu.PubKey()
	line, err := json.Marshal(ready{Listen: emu.Addr(), Control: emu.ControlAddr(), PubKey: hex.EncodeToString(pub[:])})
	if err != nil {
		emu.Close()
		return fmt.Errorf("marshal ready line: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		emu.Close()
		return fmt.Errorf("write ready line: %w", err)
	}
	<-ctx.Done()
	return emu.Close()
}

// serveProfiler serves net/http/pprof on addr until the returned stop is
// called.
func serveProfiler(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-pprof %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("profiler server", "addr", addr, "error", err)
		}
	}()
	return func() { _ = srv.Close() }, nil
}
