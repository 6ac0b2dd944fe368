package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// bins holds the paths of the programs built for this test run.
var bins struct {
	dir  string
	race bool
}

// raceEnabled: programs are built with -race unless E2E_RACE=0 (the
// benchmark figures are taken without it, as production runs).
func raceEnabled() bool { return os.Getenv("E2E_RACE") != "0" }

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "wasessions-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir, bins.race = dir, raceEnabled()
	return m.Run()
}

// buildOnce builds the programs the first time a test needs them, so a run
// that selects no stack test (-run) builds nothing.
var buildOnce = sync.OnceValue(func() error { return build(bins.dir, bins.race) })

// needPrograms fails the test if the programs could not be built.
func needPrograms(t *testing.T) {
	t.Helper()
	if err := buildOnce(); err != nil {
		t.Fatalf("build the programs: %v", err)
	}
}

// build compiles the four programs into dir, once per test run.
func build(dir string, race bool) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	pkgs := []string{"./cmd/api", "./cmd/worker", "./cmd/scheduler", "./cmd/waemu"}
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "-o", dir+string(os.PathSeparator))
	args = append(args, pkgs...)
	start := time.Now()
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s (race=%v) in %s\n", strings.Join(pkgs, " "), race, time.Since(start).Round(time.Millisecond))
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

func binPath(name string) string { return filepath.Join(bins.dir, name) }
