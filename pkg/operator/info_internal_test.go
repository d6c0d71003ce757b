package operator

import (
	"reflect"
	"testing"
	"time"
)

// TestInfoMessageCarriesEveryField: the info endpoint's wire form holds every field of the
// SDK's Info, so that converting at the edge loses nothing.
func TestInfoMessageCarriesEveryField(t *testing.T) {
	info := Info{
		Job: "j", Instance: "i", Incarnation: "inc", InputStream: "IN", InputFilters: []string{"in.>"},
		Position: 7, RestoredCheckpoint: 3, RestoredFrom: "checkpoint 3",
		Stats: Stats{Applied: 1, Rejected: 2, Emitted: 3, Suppressed: 4, Acked: 5, Declined: 6, Reused: 7,
			BytesUploaded: 8, DeadLettered: 9, DeadLettersReplayed: 10, Panics: 11},
		PoisonPolicy: PoisonStop,
		Stopped: &Stopped{Reason: "panic", Sequence: 8, Stream: "IN", Subject: "in.a", Position: 7, Error: "boom",
			At: time.Now()},
	}
	var zeros func(path string, v reflect.Value)
	zeros = func(path string, v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() {
				t.Errorf("%s is nil", path)
				return
			}
			zeros(path, v.Elem())
		case reflect.Struct:
			if v.Type() == reflect.TypeFor[time.Time]() {
				if v.IsZero() {
					t.Errorf("%s is zero", path)
				}
				return
			}
			for i := range v.NumField() {
				zeros(path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		default:
			if v.IsZero() {
				t.Errorf("%s is zero: Info does not fill it", path)
			}
		}
	}
	zeros("OperatorInfo", reflect.ValueOf(infoMessage(info)))
}
