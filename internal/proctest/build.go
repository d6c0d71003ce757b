package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Target is one program to build: the package Pkg (a path relative to the repository
// root, or an import path) into the file Out, with Env added to the environment.
type Target struct {
	Out, Pkg string
	Env      []string
}

// Cairn is the target of the cairn binary, built into dir.
func Cairn(dir string) Target { return Target{Out: filepath.Join(dir, "cairn"), Pkg: "./cmd/cairn"} }

// NATSServer is the target of a static nats-server at the version go.mod requires, built
// into dir.
func NATSServer(dir string) Target {
	return Target{Out: filepath.Join(dir, "nats-server"), Pkg: "github.com/nats-io/nats-server/v2", Env: []string{"CGO_ENABLED=0"}}
}

// Build runs `go build` for every target at once in the repository root.
func Build(t testing.TB, targets ...Target) {
	t.Helper()
	if err := BuildErr(targets...); err != nil {
		t.Fatal(err)
	}
}

// BuildErr is Build for callers without a testing.TB (TestMain).
func BuildErr(targets ...Target) error {
	root, err := Root()
	if err != nil {
		return err
	}
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, bd := range targets {
		wg.Go(func() {
			cmd := exec.Command("go", "build", "-o", bd.Out, bd.Pkg)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), bd.Env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %w\n%s", bd.Pkg, err, out)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Root returns the repository root: the nearest directory above the working directory
// holding go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
