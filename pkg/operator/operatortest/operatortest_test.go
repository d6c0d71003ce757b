package operatortest_test

import "testing"

// TestExample runs the package example's test.
func TestExample(t *testing.T) { testCounterRestores(t) }
