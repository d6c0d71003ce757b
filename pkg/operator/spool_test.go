package operator

import (
	"bytes"
	"io"
	"os"
	"testing"
)

func TestSpool(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		writes [][]byte
		onFile bool
	}{
		{name: "empty", limit: 8},
		{name: "fits in memory", limit: 8, writes: [][]byte{[]byte("abc"), []byte("defgh")}},
		{name: "moves to a file", limit: 8, writes: [][]byte{[]byte("abcdef"), []byte("ghi"), []byte("jklmnopqrstuvwxyz")}, onFile: true},
		{name: "first write too big", limit: 2, writes: [][]byte{[]byte("abcdef")}, onFile: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := newSpool(tt.limit)
			var want []byte
			for _, w := range tt.writes {
				if n, err := sp.Write(w); err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
				want = append(want, w...)
			}
			if sp.onFile() != tt.onFile {
				t.Fatalf("onFile = %v, want %v", sp.onFile(), tt.onFile)
			}
			if sp.Size() != int64(len(want)) {
				t.Fatalf("Size = %d, want %d", sp.Size(), len(want))
			}
			var name string
			if sp.file != nil {
				name = sp.file.Name()
			}
			for range 2 {
				rd, err := sp.Reader()
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(rd)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("read %q, want %q", got, want)
				}
			}
			if err := sp.Close(); err != nil {
				t.Fatal(err)
			}
			if name != "" {
				if _, err := os.Stat(name); !os.IsNotExist(err) {
					t.Fatalf("spool file %s left behind: %v", name, err)
				}
			}
		})
	}
}
