package harness

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

// Binaries are the programs built for one test binary's run, in a
// temporary directory.
type Binaries struct {
	dir   string
	race  bool
	build func() error
}

// RaceEnabled: programs are built with -race unless E2E_RACE=0 (benchmark
// figures are taken without it, as production runs).
func RaceEnabled() bool { return os.Getenv("E2E_RACE") != "0" }

// RunTests is a suite's TestMain: it makes the directory the programs are
// built into, hands the Binaries to use, runs the tests and removes the
// directory. The programs are built the first time a test needs them
// (Binaries.Need), so a run that selects no stack test builds nothing.
func RunTests(m *testing.M, use func(*Binaries)) int {
	dir, err := os.MkdirTemp("", "wasessions-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	b := &Binaries{dir: dir, race: RaceEnabled()}
	b.build = sync.OnceValue(func() error { return build(b.dir, b.race) })
	use(b)
	return m.Run()
}

// Need fails the test if the programs could not be built.
func (b *Binaries) Need(t testing.TB) {
	t.Helper()
	if err := b.build(); err != nil {
		t.Fatalf("build the programs: %v", err)
	}
}

// Dir is the directory the programs are built into (the scripts' BIN_DIR).
func (b *Binaries) Dir() string { return b.dir }

// Race reports whether the programs are built with the race detector.
func (b *Binaries) Race() bool { return b.race }

// Path is the built program name ("api", "worker", "scheduler", "waemu").
func (b *Binaries) Path(name string) string { return filepath.Join(b.dir, name) }

// build compiles the four programs into dir.
func build(dir string, race bool) error {
	root, err := ModuleRoot()
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
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s (race=%v) in %s\n", strings.Join(pkgs, " "), race, time.Since(start).Round(time.Millisecond))
	return nil
}

// ModuleRoot is the directory holding go.mod, above the working directory
// (a test's package directory).
func ModuleRoot() (string, error) {
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
