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

import bclock "github.com/benbjohnson/clock"

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
