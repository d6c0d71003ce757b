package coordinator

import (
	"strings"
	"testing"
)

func TestParseTriggerRequest(t *testing.T) {
	tests := []struct {
		name, body, savepoint, err string
	}{
		{"empty", "", "", ""},
		{"blank", " \n", "", ""},
		{"empty object", "{}", "", ""},
		{"savepoint", `{"savepoint":"before-upgrade"}`, "before-upgrade", ""},
		{"empty name", `{"savepoint":""}`, "", "savepoint name is empty"},
		{"too long", `{"savepoint":"` + strings.Repeat("x", 65) + `"}`, "", "65 characters long"},
		{"wildcard", `{"savepoint":"a*"}`, "", `savepoint name "a*"`},
		{"number", `{"savepoint":1}`, "", "savepoint must be a string, got 1"},
		{"null", `{"savepoint":null}`, "", "savepoint must be a string, got null"},
		{"unknown field", `{"savepoint":"x","ttl":"1h"}`, "", `unknown field "ttl"`},
		{"not an object", `"x"`, "", "must be empty (a plain checkpoint) or a JSON object"},
		{"null body", `null`, "", "must be empty (a plain checkpoint) or a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parseTriggerRequest([]byte(tc.body))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("%s: %v", tc.body, err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("%s: %v, want an error saying %q", tc.body, err, tc.err)
			case req.Savepoint != tc.savepoint:
				t.Fatalf("%s: savepoint %q, want %q", tc.body, req.Savepoint, tc.savepoint)
			}
		})
	}
}
