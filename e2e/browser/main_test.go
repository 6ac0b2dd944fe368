package browser

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// binDir holds the programs built for this test run.
var binDir string

// root is the repository root (where go.mod is).
var root string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	if root, err = moduleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "browser:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "wasessions-browser-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "browser:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "browser: build the programs:", err)
		return 1
	}
	return m.Run()
}

// build compiles the four programs once per test run, without the race
// detector: they run as in production, so the figures the test logs are
// those of the programs, not of the detector.
func build(dir string) error {
	pkgs := []string{"./cmd/api", "./cmd/worker", "./cmd/scheduler", "./cmd/waemu"}
	args := append([]string{"build", "-o", dir + string(os.PathSeparator)}, pkgs...)
	start := time.Now()
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "browser: built %s in %s\n", strings.Join(pkgs, " "), time.Since(start).Round(time.Millisecond))
	return nil
}

// moduleRoot is the directory holding go.mod, above this package.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}
