//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	// root is the repository root, where the Makefile and compose files are.
	root string
	// natsCLI is the nats CLI built from tools/go.mod.
	natsCLI string
	// cliHome isolates the CLI from the user's nats contexts.
	cliHome string
	// skipReason is set when the tests cannot run here.
	skipReason string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		skipReason = fmt.Sprintf("no Docker engine answers `docker info` (%v: %s)", err, out)
	} else if out, err := exec.Command("docker-compose", "version", "--short").CombinedOutput(); err != nil {
		skipReason = fmt.Sprintf("docker-compose is missing (%v: %s)", err, out)
	}
	if skipReason != "" {
		fmt.Fprintln(os.Stderr, "e2e: skipping the compose tests:", skipReason)
		return m.Run()
	}
	var err error
	if root, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "cairn-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	natsCLI = filepath.Join(tmp, "nats")
	cliHome = filepath.Join(tmp, "home")
	build := exec.Command("go", "build", "-modfile=tools/go.mod", "-o", natsCLI, "github.com/nats-io/natscli/nats")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build the nats CLI from tools/go.mod: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// requireDocker skips t when the tests cannot run on this machine.
func requireDocker(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip("skipping: " + skipReason)
	}
}
