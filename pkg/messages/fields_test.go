package messages_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestConfigFieldsAgreeWithTheView: every field of the table is in the JSON view with the
// value Fields gives, and a patch setting each field alone round-trips through its JSON.
func TestConfigFieldsAgreeWithTheView(t *testing.T) {
	c := messages.DefaultConfig()
	c.Interval, c.MinPause, c.Retain = 1500*time.Millisecond, time.Hour, 7
	raw, err := json.Marshal(messages.NewConfigView("j", 3, c, time.Time{}))
	if err != nil {
		t.Fatal(err)
	}
	var view map[string]any
	if err := json.Unmarshal(raw, &view); err != nil {
		t.Fatal(err)
	}
	fields := c.Fields()
	if len(view) != len(fields)+2 { // job and version
		t.Fatalf("view %s has %d keys, want the %d config fields, job and version", raw, len(view), len(fields))
	}
	for _, f := range fields {
		got, ok := view[f.Name]
		if !ok || fmt.Sprint(got) != fmt.Sprint(f.Value) {
			t.Errorf("view %s = %v, Fields gives %v", f.Name, got, f.Value)
		}
		body := fmt.Sprintf(`{%q:%v}`, f.Name, f.Value)
		if s, isString := f.Value.(string); isString {
			body = fmt.Sprintf(`{%q:%q}`, f.Name, s)
		}
		p, err := messages.ParseConfigPatch([]byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		merged, err := p.Apply(messages.DefaultConfig())
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		for _, g := range merged.Fields() {
			if g.Name == f.Name && fmt.Sprint(g.Value) != fmt.Sprint(f.Value) {
				t.Errorf("%s applied gives %v", body, g.Value)
			}
		}
	}
}
