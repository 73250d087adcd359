package clock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/clock"
)

func TestWithTimeoutFollowsTheClock(t *testing.T) {
	clk := clock.NewMock()
	ctx, cancel := clock.WithTimeout(clk, context.Background(), time.Minute)
	defer cancel()
	_, has := ctx.Deadline()
	require.False(t, has, "no deadline leaks into wall-clock socket deadlines")
	clk.Add(59 * time.Second)
	require.NoError(t, ctx.Err())
	clk.Add(time.Second)
	<-ctx.Done()
	require.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
}

func TestWithTimeoutCanceledFirst(t *testing.T) {
	clk := clock.NewMock()
	parent, stop := context.WithCancel(context.Background())
	ctx, cancel := clock.WithTimeout(clk, parent, time.Minute)
	defer cancel()
	stop()
	<-ctx.Done()
	clk.Add(time.Hour)
	require.ErrorIs(t, ctx.Err(), context.Canceled, "a parent canceled first stays canceled")

	ctx, cancel = clock.WithTimeout(clk, context.Background(), time.Minute)
	cancel()
	require.ErrorIs(t, ctx.Err(), context.Canceled)
}
