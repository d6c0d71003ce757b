package messages

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxNameLen is the longest job or instance name.
const MaxNameLen = 64

// ErrInvalidName is returned (wrapped) for a job or instance name that is not a token of
// 1 to 64 characters from [A-Za-z0-9_-].
var ErrInvalidName = errors.New("invalid name")

// ValidateName checks that name is a job or instance token: 1 to 64 characters from
// [A-Za-z0-9_-] (no dots, no wildcards, no spaces). kind ("job", "instance") names it in
// the error.
func ValidateName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s name is empty; allowed: 1-%d characters from [A-Za-z0-9_-]", ErrInvalidName, kind, MaxNameLen)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s name is %d characters long; allowed: 1-%d characters from [A-Za-z0-9_-]", ErrInvalidName, kind, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			continue
		}
		what := fmt.Sprintf("byte 0x%02x", c)
		if r, size := utf8.DecodeRuneInString(name[i:]); size > 1 || r != utf8.RuneError {
			what = strconv.QuoteRune(r)
		}
		return fmt.Errorf("%w: %s name %q has %s at byte %d; allowed: 1-%d characters from [A-Za-z0-9_-]", ErrInvalidName, kind, name, what, i, MaxNameLen)
	}
	return nil
}
