package walbackup

import (
	"errors"
	"fmt"
	"time"
)

// Schedule tells when the parent job runs next. A Schedule that also has a
// Validate() error method is checked by NewJob.
type Schedule interface {
	// Next returns the first run strictly after t, in t's location.
	Next(t time.Time) time.Time
}

// DailySchedule runs the parent at Hour:Minute on the given days of the
// week (every day when Days is empty), in the clock's location.
type DailySchedule struct {
	Hour, Minute int
	Days         []time.Weekday
}

// Daily runs the parent every day at hour:minute, or only on days when
// some are given: Daily(22, 0, time.Monday, time.Thursday).
func Daily(hour, minute int, days ...time.Weekday) DailySchedule {
	return DailySchedule{Hour: hour, Minute: minute, Days: days}
}

// Next implements Schedule.
func (d DailySchedule) Next(t time.Time) time.Time {
	n := time.Date(t.Year(), t.Month(), t.Day(), d.Hour, d.Minute, 0, 0, t.Location())
	for i := 0; i < 8; i++ {
		if n.After(t) && d.runsOn(n.Weekday()) {
			return n
		}
		n = time.Date(n.Year(), n.Month(), n.Day()+1, d.Hour, d.Minute, 0, 0, n.Location())
	}
	return n // unreachable for a valid schedule: some day of any week matches
}

func (d DailySchedule) runsOn(w time.Weekday) bool {
	if len(d.Days) == 0 {
		return true
	}
	for _, x := range d.Days {
		if x == w {
			return true
		}
	}
	return false
}

// Validate reports a time of day or weekday out of range.
func (d DailySchedule) Validate() error {
	if d.Hour < 0 || d.Hour > 23 || d.Minute < 0 || d.Minute > 59 {
		return fmt.Errorf("daily schedule at %02d:%02d: not a time of day", d.Hour, d.Minute)
	}
	for _, w := range d.Days {
		if w < time.Sunday || w > time.Saturday {
			return fmt.Errorf("daily schedule: %d is not a day of the week", w)
		}
	}
	return nil
}

// HourlySchedule runs the parent every Hours hours, at whole hours counted
// from midnight (Hours 4: 00:00, 04:00, 08:00...), in the clock's location.
type HourlySchedule struct {
	Hours int
}

// EveryHours runs the parent every n hours from midnight; n is 1 to 24.
func EveryHours(n int) HourlySchedule { return HourlySchedule{Hours: n} }

// Next implements Schedule.
func (h HourlySchedule) Next(t time.Time) time.Time {
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	for hour := 0; ; hour += h.Hours {
		if hour >= 24 {
			midnight = time.Date(midnight.Year(), midnight.Month(), midnight.Day()+1, 0, 0, 0, 0, midnight.Location())
			hour = 0
		}
		// time.Date, not Add: a day with a daylight saving change keeps its wall-clock hours.
		n := time.Date(midnight.Year(), midnight.Month(), midnight.Day(), hour, 0, 0, 0, midnight.Location())
		if n.After(t) {
			return n
		}
	}
}

// Validate reports a period outside 1 to 24 hours.
func (h HourlySchedule) Validate() error {
	if h.Hours < 1 || h.Hours > 24 {
		return errors.New("hourly schedule: every 1 to 24 hours")
	}
	return nil
}
