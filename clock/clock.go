// Package clock is the one place pglogship imports its time source
// (github.com/benbjohnson/clock), so every timer, ticker and sleep in the
// library goes through an injected Clock and the dependency can be swapped
// here alone.
//
// Library code never calls time.Now, time.Sleep, time.After or
// time.NewTicker: it asks the Clock from its Config. Host programs pass
// New(); lifecycle tests pass NewMock() and advance virtual time, so hours of
// 15-minute intervals run in milliseconds.
package clock

import (
	"context"
	"sync"
	"time"

	bclock "github.com/benbjohnson/clock"
)

// Clock tells the time and makes timers and tickers.
type Clock = bclock.Clock

// Mock is a Clock that only moves when told to (Add, Set).
type Mock = bclock.Mock

// Timer and Ticker are what Clock hands out.
type (
	Timer  = bclock.Timer
	Ticker = bclock.Ticker
)

// New returns the real wall clock.
func New() Clock { return bclock.New() }

// NewMock returns a mock clock set to the Unix epoch.
func NewMock() *Mock { return bclock.NewMock() }

// WithTimeout returns a copy of parent that ends d from now on clk, with
// context.DeadlineExceeded as its error. Unlike Mock.WithTimeout it reports
// no Deadline: network code turns a context's deadline into a wall-clock
// socket deadline, which a virtual time would make wrong.
func WithTimeout(clk Clock, parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	inner, cancel := context.WithCancel(parent)
	c := &timeoutCtx{Context: inner}
	t := clk.AfterFunc(d, func() {
		c.mu.Lock()
		c.expired = inner.Err() == nil
		cancel()
		c.mu.Unlock()
	})
	return c, func() { t.Stop(); cancel() }
}

type timeoutCtx struct {
	context.Context
	mu      sync.Mutex
	expired bool
}

func (c *timeoutCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *timeoutCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expired {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}
