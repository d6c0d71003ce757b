package state_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// guideMarker precedes the Go block of docs/operator-guide.md that shows the session
// window of example_session_test.go.
const guideMarker = "<!-- state example: example_session_test.go -->"

// TestGuideSessionWindowIsTheExample keeps the guide's session window and the example's
// the same: the block after guideMarker must be example_session_test.go's declarations
// before ExampleStore_Range_sessionWindow.
func TestGuideSessionWindowIsTheExample(t *testing.T) {
	md, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "operator-guide.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(md), guideMarker+"\n```go\n")
	if !ok {
		t.Fatalf("docs/operator-guide.md has no Go block after %s", guideMarker)
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatal("docs/operator-guide.md: the session window's Go block never ends")
	}
	src, err := os.ReadFile("example_session_test.go")
	if err != nil {
		t.Fatal(err)
	}
	const from, to = "// gap closes a session", "// A session window on keyed state."
	i, j := strings.Index(string(src), from), strings.Index(string(src), to)
	if i < 0 || j < i {
		t.Fatalf("example_session_test.go: %q followed by %q not found", from, to)
	}
	if want := strings.TrimSpace(string(src[i:j])); strings.TrimSpace(block) != want {
		t.Fatalf("docs/operator-guide.md's session window and example_session_test.go differ: change both\nguide:\n%s\nexample:\n%s", block, want)
	}
}
