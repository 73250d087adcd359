package memory_test

import (
	"testing"

	"github.com/pglogship/pglogship/session"
	"github.com/pglogship/pglogship/session/memory"
	"github.com/pglogship/pglogship/session/sessiontest"
)

func TestConformance(t *testing.T) {
	sessiontest.Run(t, sessiontest.Harness{
		New: func(testing.TB) session.Store { return memory.New() },
	})
}
