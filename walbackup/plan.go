package walbackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pglogship/pglogship/hypervisor"
	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/wal"
)

// Errors of restore planning.
var (
	// ErrNoRestorePoint: the repository holds no restore point that a
	// restore to the target can start from.
	ErrNoRestorePoint = errors.New("no restore point to start from")
	// ErrOutsideInterval: the target lies outside the restorable interval.
	ErrOutsideInterval = errors.New("target outside the restorable interval")
)

type targetKind int

const (
	targetLatest targetKind = iota
	targetConsistent
	targetTime
	targetLSN
	targetXID
	targetName
)

// Target is where a restore stops. Make one with Latest, Consistent,
// ToTime, ToLSN, ToXID or ToName.
type Target struct {
	kind      targetKind
	time      time.Time
	lsn       wal.LSN
	xid       uint32
	name      string
	exclusive bool
}

// Latest restores up to the end of the shipped WAL.
func Latest() Target { return Target{kind: targetLatest} }

// Consistent restores a restore point and only the WAL it needs to be
// consistent (PostgreSQL's recovery_target = 'immediate').
func Consistent() Target { return Target{kind: targetConsistent} }

// ToTime restores the transactions committed at or before t.
func ToTime(t time.Time) Target { return Target{kind: targetTime, time: t} }

// ToLSN restores the WAL up to and including lsn.
func ToLSN(lsn wal.LSN) Target { return Target{kind: targetLSN, lsn: lsn} }

// ToXID restores up to and including the commit of transaction xid.
func ToXID(xid uint32) Target { return Target{kind: targetXID, xid: xid} }

// ToName restores up to the named restore point made with
// pg_create_restore_point.
func ToName(name string) Target { return Target{kind: targetName, name: name} }

// Exclusive stops just before the target instead of just after it (time,
// LSN and transaction targets; PostgreSQL's recovery_target_inclusive =
// off).
func (t Target) Exclusive() Target { t.exclusive = true; return t }

// String describes the target for logs and errors.
func (t Target) String() string {
	ex := ""
	if t.exclusive {
		ex = " (exclusive)"
	}
	switch t.kind {
	case targetConsistent:
		return "the restore point's consistency point"
	case targetTime:
		return "time " + t.time.UTC().Format(time.RFC3339Nano) + ex
	case targetLSN:
		return "LSN " + t.lsn.String() + ex
	case targetXID:
		return "transaction " + strconv.FormatUint(uint64(t.xid), 10) + ex
	case targetName:
		return fmt.Sprintf("restore point %q", t.name)
	}
	return "the latest shipped WAL"
}

// validate checks what can be checked without the repository.
func (t Target) validate() error {
	switch {
	case t.kind == targetTime && t.time.IsZero():
		return errors.New("restore target: zero time")
	case t.kind == targetLSN && t.lsn == 0:
		return errors.New("restore target: LSN 0/0")
	case t.kind == targetXID && t.xid < 3:
		return fmt.Errorf("restore target: transaction id %d is not a normal one", t.xid)
	case t.kind == targetName && (t.name == "" || len(t.name) >= 64):
		return fmt.Errorf("restore target: restore point name %q: 1 to 63 bytes", t.name)
	case t.exclusive && (t.kind == targetLatest || t.kind == targetConsistent || t.kind == targetName):
		return fmt.Errorf("restore target: %s cannot be exclusive", t)
	}
	return nil
}

// settings are the recovery settings that make PostgreSQL stop at t.
func (t Target) settings(timeline uint32) map[string]string {
	s := map[string]string{"recovery_target_action": "promote"}
	switch t.kind {
	case targetLatest:
		s["recovery_target_timeline"] = "latest"
		return s
	case targetConsistent:
		s["recovery_target"] = "immediate"
	case targetTime:
		s["recovery_target_time"] = t.time.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	case targetLSN:
		s["recovery_target_lsn"] = t.lsn.String()
	case targetXID:
		s["recovery_target_xid"] = strconv.FormatUint(uint64(t.xid), 10)
	case targetName:
		s["recovery_target_name"] = t.name
	}
	if t.kind == targetTime || t.kind == targetLSN || t.kind == targetXID {
		s["recovery_target_inclusive"] = strconv.FormatBool(!t.exclusive)
	}
	// A target in the past stays on the restore point's timeline, even
	// where a later restore branched off a newer one.
	s["recovery_target_timeline"] = strconv.FormatUint(uint64(timeline), 10)
	return s
}

// Point is a position in an instance's history.
type Point struct {
	LSN  wal.LSN
	Time time.Time // zero when not known
}

// Interval is what an instance can be restored to: any point from
// Earliest to Latest on Timeline.
type Interval struct {
	Instance      repository.Instance
	Timeline      uint32
	Earliest      Point // the oldest restore point's consistency point
	Latest        Point // the end of the WAL shipped without a gap after a restore point
	RestorePoints int
	// Unknown is the WAL in the interval whose summary could not be
	// computed when it was shipped. It restores like any other, but the
	// commits, transactions and restore point names in it are not known:
	// Latest.Time is the last commit known, and a target there is left to
	// PostgreSQL to find (Plan.Proven is false).
	Unknown []UnknownWAL
}

// UnknownWAL is a range of shipped WAL without a summary, and why.
type UnknownWAL struct {
	From, To wal.LSN // To is exclusive
	Reason   string
}

func (u UnknownWAL) String() string {
	return u.From.String() + " to " + u.To.String() + ": " + u.Reason
}

// String describes the interval with the precision Plan checks targets
// with.
func (iv Interval) String() string {
	s := "restorable from " + describe(iv.Earliest) + " to " + describe(iv.Latest)
	if len(iv.Unknown) > 0 {
		var parts []string
		for _, u := range iv.Unknown {
			parts = append(parts, u.String())
		}
		s += "; WAL summaries unknown from " + strings.Join(parts, "; from ")
	}
	return s
}

// RestoreRequest says what to restore.
type RestoreRequest struct {
	Machine string
	// SystemID picks one of the machine's clusters; 0 means the one with
	// the newest restore point.
	SystemID uint64
	// DataDir picks one of the machine's instances by the data directory
	// its restore points were taken of (Machine.Instances), instead of by
	// SystemID; empty: as SystemID says.
	DataDir string
	Target  Target
	// RestorePoint starts from this restore point; empty means the newest
	// one before the target.
	RestorePoint string
}

// Plan is a checked restore: where it starts, what it applies and the
// recovery settings that stop it at its target. Nothing has been written
// when a Plan is made.
type Plan struct {
	Instance     repository.Instance
	Target       Target
	RestorePoint *repository.Manifest
	Manifests    []*repository.Manifest // the image chain's restore points, full image first
	Chain        []hypervisor.Image
	Interval     Interval
	// Settings are the recovery settings for postgresql.auto.conf
	// (recovery_target_*, recovery_target_timeline, recovery_target_action).
	Settings map[string]string
	// Proven says the WAL summaries show the target is in the shipped WAL
	// after the restore point. False for a time, transaction or name that
	// lies, if anywhere, in WAL whose summary is unknown (Interval.Unknown):
	// the restore goes ahead and PostgreSQL looks for it, failing with its
	// own report when it is not there.
	Proven bool
}

// Interval reports what a machine's cluster (systemID, or 0 for the one
// with the newest restore point) can be restored to.
func (j *Job) Interval(ctx context.Context, machine string, systemID uint64) (Interval, error) {
	inst, rps, err := j.restorePoints(ctx, machine, systemID, "")
	if err != nil {
		return Interval{}, err
	}
	iv, _, err := j.interval(ctx, inst, rps)
	return iv, err
}

// Plan checks a restore request against the repository and chooses its
// restore point: the one named, or the newest whose consistency point
// comes before the target. A target outside the restorable interval is
// ErrOutsideInterval, and no usable restore point is ErrNoRestorePoint,
// both before anything is written.
func (j *Job) Plan(ctx context.Context, req RestoreRequest) (*Plan, error) {
	if err := req.Target.validate(); err != nil {
		return nil, err
	}
	inst, rps, err := j.restorePoints(ctx, req.Machine, req.SystemID, req.DataDir)
	if err != nil {
		return nil, err
	}
	iv, run, err := j.interval(ctx, inst, rps)
	if err != nil {
		return nil, err
	}
	t := req.Target
	outside := func(why string) error {
		return fmt.Errorf("restore %s to %s: %w: %s (%s)", req.Machine, t, ErrOutsideInterval, why, iv)
	}
	// pos is where a name or transaction target lies at the earliest, so
	// the restore point must be consistent before it.
	var pos wal.LSN
	settings := t.settings
	proven := true
	// firstUnknown is where WAL without a summary starts (0: none).
	var firstUnknown wal.LSN
	if len(iv.Unknown) > 0 {
		firstUnknown = iv.Unknown[0].From
	}
	switch t.kind {
	case targetLSN:
		if t.lsn < iv.Earliest.LSN || t.lsn > iv.Latest.LSN {
			return nil, outside("no shipped WAL reaches it from a restore point")
		}
		pos = t.lsn
	case targetTime:
		if t.time.Before(iv.Earliest.Time) {
			return nil, outside("it is before the oldest restore point")
		}
		after := !iv.Latest.Time.IsZero() && iv.Latest.Time.Before(t.time)
		// Commit times are the guest's clock: only a target after the
		// last commit known is judged by the host's.
		now := j.cfg.Clock.Now()
		if after && now.Before(t.time) {
			return nil, outside("it is in the future (now is " + now.UTC().Format(time.RFC3339Nano) + ")")
		}
		if after && firstUnknown == 0 {
			return nil, outside("no commit shipped after it to stop at")
		}
		if after {
			proven = false // a commit after it may lie in the unknown WAL
		} else if !iv.Latest.Time.IsZero() && !t.exclusive && !t.time.Before(iv.Latest.Time) && firstUnknown == 0 {
			// At the last commit shipped: recovery would look for a later
			// one in vain; the end of the WAL is that very state.
			settings = func(tli uint32) map[string]string {
				return map[string]string{"recovery_target_action": "promote", "recovery_target_timeline": strconv.FormatUint(uint64(tli), 10)}
			}
		}
	case targetName:
		// PostgreSQL stops at the first restore point of that name after
		// the restore point's consistency point.
		for i := len(run) - 1; i >= 0 && pos == 0; i-- {
			if run[i].summary == nil {
				continue
			}
			for _, p := range run[i].summary.RestorePoints {
				if p.Name == t.name {
					pos = p.LSN
				}
			}
		}
		switch {
		case pos == 0 && firstUnknown == 0:
			return nil, outside(fmt.Sprintf("no restore point named %q in the shipped WAL", t.name))
		case pos == 0:
			pos, proven = firstUnknown, false
		case firstUnknown != 0 && firstUnknown < pos:
			pos = firstUnknown // it may be there too, earlier
		}
	case targetXID:
		for _, sg := range run {
			if sg.summary != nil && sg.summary.MaxXID >= t.xid {
				pos = sg.name.StartLSN(rps[len(rps)-1].SegmentSize())
				break
			}
		}
		switch {
		case pos == 0 && firstUnknown == 0:
			return nil, outside(fmt.Sprintf("transaction %d is not in the shipped WAL", t.xid))
		case pos == 0:
			pos, proven = firstUnknown, false
		case firstUnknown != 0 && firstUnknown < pos:
			pos = firstUnknown
		}
	}
	reaches := func(rp *repository.Manifest) bool {
		switch {
		case t.kind == targetTime:
			return !rp.StopTime.After(t.time)
		case pos != 0:
			return rp.StopLSN <= pos
		}
		return true // latest, consistent, or a position the WAL does not tell: the newest
	}
	var rp *repository.Manifest
	if req.RestorePoint != "" {
		for _, m := range rps {
			if m.ID == req.RestorePoint {
				rp = m
			}
		}
		if rp == nil {
			return nil, fmt.Errorf("restore %s: restore point %s: %w", req.Machine, req.RestorePoint, ErrNoRestorePoint)
		}
		if !reaches(rp) {
			return nil, fmt.Errorf("restore %s to %s: restore point %s is consistent only at %s: %w", req.Machine, t, rp.ID,
				rp.StopLSN, ErrOutsideInterval)
		}
	} else {
		for i := len(rps) - 1; i >= 0 && rp == nil; i-- {
			if reaches(rps[i]) {
				rp = rps[i]
			}
		}
		if rp == nil {
			return nil, fmt.Errorf("restore %s to %s: %w", req.Machine, t, ErrNoRestorePoint)
		}
	}
	ms, chain, err := ImageChain(ctx, j.cfg.Repository, inst, rp.ID, j.auth())
	if err != nil {
		return nil, err
	}
	if !proven {
		j.cfg.Logger.Warn("restore target not proven by the WAL summaries: PostgreSQL looks for it", "machine", req.Machine,
			"target", t.String(), "interval", iv.String())
	}
	return &Plan{Instance: inst, Target: t, RestorePoint: rp, Manifests: ms, Chain: chain, Interval: iv,
		Settings: settings(rp.Timeline), Proven: proven}, nil
}

// describe gives a point with the precision targets are checked with.
func describe(p Point) string {
	if p.Time.IsZero() {
		return p.LSN.String()
	}
	return p.LSN.String() + " (" + p.Time.UTC().Format(time.RFC3339Nano) + ")"
}

// restorePoints finds the machine's cluster and its restore points,
// oldest first.
// SystemIDOf returns the system identifier of machine's instance whose
// newest restore point was taken of the data directory dataDir, for
// Interval and the other calls that pick an instance by it.
// ErrNoRestorePoint when none was.
func (j *Job) SystemIDOf(ctx context.Context, machine, dataDir string) (uint64, error) {
	inst, _, err := j.restorePoints(ctx, machine, 0, dataDir)
	return inst.SystemID, err
}

func (j *Job) restorePoints(ctx context.Context, machine string, systemID uint64, dataDir string) (repository.Instance, []*repository.Manifest, error) {
	insts, err := repository.Instances(ctx, j.cfg.Repository, j.cfg.Name, machine)
	if err != nil {
		return repository.Instance{}, nil, err
	}
	var best repository.Instance
	var bestRPs []*repository.Manifest
	for _, inst := range insts {
		if systemID != 0 && inst.SystemID != systemID {
			continue
		}
		rps, err := repository.RestorePoints(ctx, j.cfg.Repository, inst, j.auth())
		if err != nil {
			return repository.Instance{}, nil, err
		}
		if dataDir != "" && len(rps) > 0 && rps[len(rps)-1].DataDir != dataDir {
			continue
		}
		if len(rps) > 0 && (bestRPs == nil || rps[len(rps)-1].ID > bestRPs[len(bestRPs)-1].ID) {
			best, bestRPs = inst, rps
		}
	}
	if bestRPs == nil {
		what := "machine " + machine
		if systemID != 0 {
			what += fmt.Sprintf(" (system identifier %d)", systemID)
		}
		if dataDir != "" {
			what += " instance " + dataDir
		}
		return repository.Instance{}, nil, fmt.Errorf("%s of job %q: %w", what, j.cfg.Name, ErrNoRestorePoint)
	}
	return best, bestRPs, nil
}

// interval is where the restore points and the WAL after them reach: from
// the oldest consistency point to the end of the WAL that follows the
// newest restore point without a gap. It also returns that WAL, in order,
// with the segments' summaries, for the checks of time, name and
// transaction targets.
func (j *Job) interval(ctx context.Context, inst repository.Instance, rps []*repository.Manifest) (Interval, []shippedSegment, error) {
	newest := rps[len(rps)-1]
	iv := Interval{Instance: inst, Timeline: newest.Timeline, RestorePoints: len(rps),
		Earliest: Point{LSN: rps[0].StopLSN, Time: rps[0].StopTime}, Latest: Point{LSN: newest.StopLSN, Time: newest.StopTime}}
	segs, err := j.archivedSegments(ctx, inst, newest.Timeline)
	if err != nil {
		return Interval{}, nil, err
	}
	size := newest.SegmentSize()
	start := wal.SegmentAt(newest.Timeline, newest.StartLSN, size)
	if _, ok := segs[start.String()]; !ok {
		return Interval{}, nil, fmt.Errorf("restore point %s: its first WAL segment %s is not in the repository", newest.ID, start)
	}
	end := start
	for {
		if _, ok := segs[end.Next(size).String()]; !ok {
			break
		}
		end = end.Next(size)
	}
	if lsn := end.Next(size).StartLSN(size); lsn > iv.Latest.LSN {
		iv.Latest.LSN = lsn
	}
	// The WAL a restore may read: what is held from the oldest restore
	// point's start to that end.
	var run []shippedSegment
	for f := wal.SegmentAt(newest.Timeline, rps[0].StartLSN, size); f.String() <= end.String(); f = f.Next(size) {
		sum, ok := segs[f.String()]
		if !ok {
			continue
		}
		run = append(run, shippedSegment{name: f, summary: sum})
		// What the summary does not cover: all of the segment without one,
		// the rest of it after a stop (valid WAL runs to a segment's end
		// or its switch record, so a stop is WAL the reader could not read).
		from, to, why := f.StartLSN(size), f.Next(size).StartLSN(size), "no WAL summary stored with it"
		if sum != nil {
			if sum.Stop == nil {
				continue
			}
			from, why = max(from, min(sum.Stop.LSN, to)), sum.Stop.Reason
		}
		if n := len(iv.Unknown); n > 0 && iv.Unknown[n-1].To == from {
			iv.Unknown[n-1].To = to
			continue
		}
		iv.Unknown = append(iv.Unknown, UnknownWAL{From: from, To: to, Reason: why})
	}
	// The latest point in time is the last commit shipped: recovery can
	// stop after it, but finds nothing later to stop at.
	for _, sg := range run {
		if sg.summary != nil && sg.summary.LastCommit.After(iv.Latest.Time) {
			iv.Latest.Time = sg.summary.LastCommit
		}
	}
	return iv, run, nil
}

// shippedSegment is one segment of the restorable WAL.
type shippedSegment struct {
	name    wal.FileName
	summary *wal.Summary // nil when its bundle has none
}

// archivedSegments returns the segments of a timeline that the repository
// holds, from the bundles' indexes (a bundle's name range can span a
// segment a batch did not have), each with its WAL summary when the bundle
// has one (nil otherwise).
func (j *Job) archivedSegments(ctx context.Context, inst repository.Instance, tli uint32) (map[string]*wal.Summary, error) {
	refs, err := repository.Bundles(ctx, j.cfg.Repository, inst, tli)
	if err != nil {
		return nil, err
	}
	segs := map[string]*wal.Summary{}
	for _, ref := range refs {
		b, err := bundle.Open(ctx, j.cfg.Repository, ref.Object.Name, ref.Object.Size, j.cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("read the index of %s: %w", ref.Object.Name, err)
		}
		for _, e := range b.Entries() {
			if f, err := wal.ParseFileName(e.Name); err != nil || f.Kind != wal.Segment {
				continue
			}
			var sum *wal.Summary
			if e.Meta != nil {
				sum = new(wal.Summary)
				if json.Unmarshal(e.Meta, sum) != nil {
					sum = nil
				}
			}
			if cur, ok := segs[e.Name]; !ok || cur == nil {
				segs[e.Name] = sum // present, with a summary when some copy has one
			}
		}
	}
	return segs, nil
}
