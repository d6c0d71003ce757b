package messages

import (
	"fmt"
	"strconv"
	"time"
)

// configFields is the one table of a job's checkpoint config fields, in the order requests,
// replies and log lines give them. ParseConfigPatch reads each field's form and range from
// it, ConfigPatch.Apply and MarshalJSON and CheckpointConfig.Validate and Fields walk it:
// a new field is one row here, one field in CheckpointConfig, ConfigPatch and ConfigView.
var configFields = []configField{
	field[time.Duration]{FieldInterval, MinInterval, MaxInterval,
		func(c *CheckpointConfig) *time.Duration { return &c.Interval },
		func(p *ConfigPatch) **time.Duration { return &p.Interval }},
	field[time.Duration]{FieldTimeout, MinTimeout, MaxTimeout,
		func(c *CheckpointConfig) *time.Duration { return &c.Timeout },
		func(p *ConfigPatch) **time.Duration { return &p.Timeout }},
	field[time.Duration]{FieldMinPause, 0, MaxMinPause,
		func(c *CheckpointConfig) *time.Duration { return &c.MinPause },
		func(p *ConfigPatch) **time.Duration { return &p.MinPause }},
	field[int]{FieldMaxConcurrent, MinMaxConcurrent, MaxMaxConcurrent,
		func(c *CheckpointConfig) *int { return &c.MaxConcurrent },
		func(p *ConfigPatch) **int { return &p.MaxConcurrent }},
	field[int]{FieldTolerableFailures, MinTolerableFailures, MaxTolerableFailures,
		func(c *CheckpointConfig) *int { return &c.TolerableFailures },
		func(p *ConfigPatch) **int { return &p.TolerableFailures }},
	field[int]{FieldRetain, MinRetain, MaxRetain,
		func(c *CheckpointConfig) *int { return &c.Retain },
		func(p *ConfigPatch) **int { return &p.Retain }},
}

// configField is one row of configFields.
type configField interface {
	// name is the field's name in requests and replies.
	name() string
	// parse sets the field in p from v as sent, checking its form and range.
	parse(p *ConfigPatch, v patchValue) error
	// set reports whether p sets the field; apply copies it into c when it does.
	set(p ConfigPatch) bool
	apply(p ConfigPatch, c *CheckpointConfig)
	// checkPatch checks the field's value in p, when set, against its range.
	checkPatch(p ConfigPatch) error
	// validate checks the field's value in c against its range.
	validate(c CheckpointConfig) error
	// json is the field's value in p as a JSON literal.
	json(p ConfigPatch) string
	// value is the field's value in c as replies and log lines give it.
	value(c CheckpointConfig) any
}

// field is a config field of type T with its range and its places in a CheckpointConfig
// and a ConfigPatch.
type field[T time.Duration | int] struct {
	fieldName string
	lo, hi    T
	inConfig  func(*CheckpointConfig) *T
	inPatch   func(*ConfigPatch) **T
}

func (f field[T]) name() string { return f.fieldName }

func (f field[T]) parse(p *ConfigPatch, v patchValue) error {
	var x T
	switch dst := any(&x).(type) {
	case *time.Duration:
		d, err := durationValue(f.fieldName, v)
		if err != nil {
			return err
		}
		*dst = d
		if err := f.check(x); err != nil {
			return err
		}
	case *int:
		// wholeNumber checks the range with the form it names.
		n, err := wholeNumber(f.fieldName, v, int64(f.lo), int64(f.hi))
		if err != nil {
			return err
		}
		*dst = int(n)
	}
	*f.inPatch(p) = &x
	return nil
}

// check checks a value a patch sets against the field's range; errors wrap ErrBadRequest.
func (f field[T]) check(v T) error {
	if v >= f.lo && v <= f.hi {
		return nil
	}
	if _, ok := any(v).(time.Duration); ok {
		return fmt.Errorf("%w: %s: %s is out of range; give a duration from %s to %s", ErrBadRequest, f.fieldName,
			f.text(v), f.text(f.lo), f.text(f.hi))
	}
	return fmt.Errorf("%w: %s: %d is out of range; give %s", ErrBadRequest, f.fieldName, int(v), wholeNumberForm(int64(f.lo), int64(f.hi)))
}

func (f field[T]) set(p ConfigPatch) bool { return *f.inPatch(&p) != nil }

func (f field[T]) checkPatch(p ConfigPatch) error {
	if v := *f.inPatch(&p); v != nil {
		return f.check(*v)
	}
	return nil
}

func (f field[T]) apply(p ConfigPatch, c *CheckpointConfig) {
	if v := *f.inPatch(&p); v != nil {
		*f.inConfig(c) = *v
	}
}

func (f field[T]) validate(c CheckpointConfig) error {
	v := *f.inConfig(&c)
	if v >= f.lo && v <= f.hi {
		return nil
	}
	return fmt.Errorf("%w: %s %s is out of range; allowed: %s to %s", ErrInvalidCheckpointConfig, f.fieldName, f.text(v), f.text(f.lo), f.text(f.hi))
}

func (f field[T]) json(p ConfigPatch) string {
	v := **f.inPatch(&p)
	if d, ok := any(v).(time.Duration); ok {
		return strconv.Quote(d.String())
	}
	return f.text(v)
}

func (f field[T]) value(c CheckpointConfig) any {
	v := *f.inConfig(&c)
	if d, ok := any(v).(time.Duration); ok {
		return formatDuration(d)
	}
	return v
}

// text formats v as errors give it: a duration as formatDuration does, a number in decimal.
func (f field[T]) text(v T) string {
	if d, ok := any(v).(time.Duration); ok {
		return formatDuration(d)
	}
	return strconv.Itoa(int(v))
}

// ConfigField is one field of a checkpoint config as Fields gives it.
type ConfigField struct {
	// Name is the field's name in requests and replies ("interval", "retain", …).
	Name string
	// Value is a duration field's value as a string ("750ms") or a count's as an int.
	Value any
}

// Fields returns c's fields in the order of requests and replies, for log lines.
func (c CheckpointConfig) Fields() []ConfigField {
	out := make([]ConfigField, len(configFields))
	for i, f := range configFields {
		out[i] = ConfigField{Name: f.name(), Value: f.value(c)}
	}
	return out
}
