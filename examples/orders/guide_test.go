package main

import (
	"bytes"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-stream/cairn/internal/proctest"
)

// guideMarker precedes each Go block of docs/operator-guide.md that is part of its
// program; the marked blocks, in order, are the whole main.go.
const guideMarker = "<!-- guide: main.go -->"

// guideProgram returns the program of docs/operator-guide.md: its marked Go blocks, in
// order, separated by blank lines.
func guideProgram(t *testing.T) []byte {
	t.Helper()
	md, err := os.ReadFile(filepath.Join("..", "..", "docs", "operator-guide.md"))
	if err != nil {
		t.Fatal(err)
	}
	var prog bytes.Buffer
	lines := strings.Split(string(md), "\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] != guideMarker {
			continue
		}
		if i+1 == len(lines) || lines[i+1] != "```go" {
			t.Fatalf("docs/operator-guide.md:%d: %s is not followed by a ```go line", i+1, guideMarker)
		}
		n := slices.Index(lines[i+2:], "```")
		if n < 0 {
			t.Fatalf("docs/operator-guide.md:%d: the Go block never ends", i+2)
		}
		if prog.Len() > 0 {
			prog.WriteByte('\n')
		}
		for _, l := range lines[i+2 : i+2+n] {
			prog.WriteString(l + "\n")
		}
		i += 2 + n
	}
	if prog.Len() == 0 {
		t.Fatalf("docs/operator-guide.md has no Go block marked %s", guideMarker)
	}
	return prog.Bytes()
}

// TestGuideIsTheExample keeps docs/operator-guide.md's program and this example one
// program, gofmt-ed and under the 100 lines the guide promises.
func TestGuideIsTheExample(t *testing.T) {
	prog := guideProgram(t)
	formatted, err := format.Source(prog)
	if err != nil {
		t.Fatalf("the guide's program does not parse: %v\n%s", err, prog)
	}
	if !bytes.Equal(formatted, prog) {
		t.Errorf("the guide's program is not gofmt-ed")
	}
	if n := bytes.Count(prog, []byte("\n")); n >= 100 {
		t.Errorf("the guide's program has %d lines; the guide promises under 100", n)
	}
	example, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(prog, example) {
		got, want := strings.Split(string(prog), "\n"), strings.Split(string(example), "\n")
		line := 0
		for line < min(len(got), len(want)) && got[line] == want[line] {
			line++
		}
		t.Fatalf("docs/operator-guide.md's program and examples/orders/main.go differ from line %d of main.go: change both", line+1)
	}
}

// buildGuide builds the guide's program as section 1 of the guide does, in a module of
// its own outside the repository that requires github.com/cairn-stream/cairn and replaces
// it with this checkout, and returns the binary. Instead of the guide's go get ., which
// downloads the program's requirements, go.sum is the repository's and
// -mod=mod lets go build add the requirements of the program's imports: it then needs
// nothing the repository's own build has not put in the module cache.
func buildGuide(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to build the guide's program with")
	}
	root, err := proctest.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), guideProgram(t), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod -buildvcs=false", "GOWORK=off")
	for _, args := range [][]string{
		{"mod", "init", "example.com/orders"},
		{"mod", "edit", "-require=github.com/cairn-stream/cairn@v0.0.0", "-replace=github.com/cairn-stream/cairn=" + root},
		{"build", "-o", "orders", "."},
	} {
		cmd := exec.Command(gobin, args...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s in the guide's module: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return filepath.Join(dir, "orders")
}
