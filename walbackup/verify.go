package walbackup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/pglogship/pglogship/repository"
	"github.com/pglogship/pglogship/repository/bundle"
	"github.com/pglogship/pglogship/repository/checksum"
	"github.com/pglogship/pglogship/wal"
)

// ProblemKind names what Verify found wrong.
type ProblemKind string

const (
	// ProblemCorrupt: an object's content does not match its checksum, or
	// cannot be read.
	ProblemCorrupt ProblemKind = "corrupt"
	// ProblemManifest: a restore point's manifest is invalid, or its image
	// chain is broken.
	ProblemManifest ProblemKind = "manifest"
	// ProblemGap: WAL a restore point needs to reach later points is
	// missing; Segment is the first missing segment.
	ProblemGap ProblemKind = "gap"
	// ProblemConflict: a WAL file is stored with two different contents (a
	// split brain); Segment names it.
	ProblemConflict ProblemKind = "conflict"
)

// Problem is one thing Verify found wrong.
type Problem struct {
	Kind     ProblemKind
	Machine  string
	SystemID uint64
	Object   string // the object concerned, if one
	Segment  string // the WAL file concerned, if one
	Detail   string
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s: %s/%d", p.Kind, p.Machine, p.SystemID)
	if p.Segment != "" {
		s += " segment " + p.Segment
	}
	if p.Object != "" {
		s += " object " + p.Object
	}
	return s + ": " + p.Detail
}

// VerifyReport is what Verify checked and found.
type VerifyReport struct {
	Instances     int
	RestorePoints int
	Bundles       int
	WALFiles      int
	Bytes         int64 // read and checked
	Problems      []Problem
}

// OK reports whether Verify found nothing wrong.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// Verify checks the job's whole repository: every object's checksum (every
// image object against its manifest, every WAL file in every bundle), every
// restore point's manifest and image chain, that no WAL file is stored
// with two contents, and that the WAL of every timeline is continuous from
// where a restore point or the timeline's branch point needs it to the
// newest segment shipped. Findings are in the report; the error is for a
// repository it could not read at all. Every child session runs the cheap
// continuity check as it ships; Verify is the complete one, and reads
// everything.
func (j *Job) Verify(ctx context.Context) (VerifyReport, error) {
	var rep VerifyReport
	for _, m := range j.cfg.Machines {
		insts, err := repository.Instances(ctx, j.cfg.Repository, j.cfg.Name, m.ID)
		if err != nil {
			return rep, err
		}
		for _, inst := range insts {
			rep.Instances++
			if err := j.verifyInstance(ctx, inst, &rep); err != nil {
				return rep, fmt.Errorf("verify %s/%d: %w", inst.Machine, inst.SystemID, err)
			}
		}
	}
	return rep, nil
}

func (j *Job) verifyInstance(ctx context.Context, inst repository.Instance, rep *VerifyReport) error {
	problem := func(kind ProblemKind, object, segment, format string, args ...any) {
		rep.Problems = append(rep.Problems, Problem{Kind: kind, Machine: inst.Machine, SystemID: inst.SystemID,
			Object: object, Segment: segment, Detail: fmt.Sprintf(format, args...)})
	}
	// Restore points: manifests, chains and image objects.
	ids, err := repository.RestorePointIDs(ctx, j.cfg.Repository, inst)
	if err != nil {
		return err
	}
	var rps []*repository.Manifest
	for _, id := range ids {
		m, err := repository.ReadManifest(ctx, j.cfg.Repository, inst, id, j.auth())
		if errors.Is(err, repository.ErrAbandoned) {
			continue // never committed: its objects are garbage
		}
		if err != nil {
			problem(ProblemManifest, inst.ManifestName(id), "", "%v", err)
			continue
		}
		rps = append(rps, m)
		rep.RestorePoints++
		if _, _, err := ImageChain(ctx, j.cfg.Repository, inst, id, j.auth()); err != nil {
			problem(ProblemManifest, inst.ManifestName(id), "", "%v", err)
		}
		for _, o := range m.Objects {
			name := inst.ImagePrefix(m) + "/" + o.Name
			n, sum, err := j.hashObject(ctx, name)
			rep.Bytes += n
			switch {
			case err != nil:
				problem(ProblemCorrupt, name, "", "%v", err)
			case n != o.Size || sum != o.SHA256:
				problem(ProblemCorrupt, name, "", "%d bytes with SHA-256 %s, the manifest says %d bytes with %s", n, sum, o.Size, o.SHA256)
			}
		}
	}

	// WAL: every file of every bundle, checked by reading it whole.
	tlis, hist, err := j.timelines(ctx, inst, problem)
	if err != nil {
		return err
	}
	segSize := int64(16 << 20)
	if len(rps) > 0 {
		segSize = rps[0].SegmentSize()
	}
	// What the restore points need of each timeline, as expiry keeps it.
	var starts []walStart
	for _, m := range rps {
		starts = append(starts, walStart{m.Timeline, m.StartLSN})
	}
	needs := walNeeds(starts, hist)
	for _, tli := range tlis {
		refs, err := repository.Bundles(ctx, j.cfg.Repository, inst, tli)
		if err != nil {
			return err
		}
		// Copies of a file compare by the XXH3 of their content, computed
		// here: bundles of older releases sum with SHA-256.
		sums := map[string]checksum.Sum{}
		for _, ref := range refs {
			rep.Bundles++
			rep.Bytes += ref.Object.Size
			b, err := bundle.Open(ctx, j.cfg.Repository, ref.Object.Name, ref.Object.Size, j.cfg.Key)
			if err != nil {
				problem(ProblemCorrupt, ref.Object.Name, "", "%v", err)
				continue
			}
			// One pass over the bundle verifies every frame's chunks and
			// footer checksum.
			for _, e := range b.Entries() {
				h := checksum.New(checksum.XXH3)
				_, err = b.WriteFile(ctx, e.Name, h)
				content := h.Sum()
				if err != nil {
					problem(ProblemCorrupt, ref.Object.Name, e.Name, "%v", err)
					continue
				}
				if prev, ok := sums[e.Name]; ok && prev != content {
					problem(ProblemConflict, ref.Object.Name, e.Name, "stored again with other content (a split brain?)")
					continue
				}
				if _, ok := sums[e.Name]; !ok {
					rep.WALFiles++
				}
				sums[e.Name] = content
			}
		}
		// Continuity: from the earliest segment a restore point needs on
		// this timeline (its start, or the timeline's branch point when
		// one branched off its own after it) to its newest.
		from, needed := needs[tli]
		var newest wal.FileName
		for name := range sums {
			if f, err := wal.ParseFileName(name); err == nil && f.Kind == wal.Segment && f.String() > newest.String() {
				newest = f
			}
		}
		if !needed || newest.Timeline == 0 {
			continue
		}
		first := wal.SegmentAt(tli, from, segSize)
		for f := first; f.String() <= newest.String(); f = f.Next(segSize) {
			if _, ok := sums[f.String()]; !ok {
				problem(ProblemGap, "", f.String(), "missing between %s and %s on timeline %d", first, newest, tli)
				break
			}
		}
	}
	return nil
}

// timelines lists the timelines with WAL of inst, and the history of each
// timeline that branched off another (from its history file).
func (j *Job) timelines(ctx context.Context, inst repository.Instance, problem func(ProblemKind, string, string, string, ...any)) ([]uint32, map[uint32][]historyEntry, error) {
	prefix := inst.Prefix() + "/wal/"
	seen := map[uint32]bool{}
	hist := map[uint32][]historyEntry{}
	var histories []string
	err := j.cfg.Repository.List(ctx, prefix, func(o repository.Object) error {
		dir, rest, _ := strings.Cut(strings.TrimPrefix(o.Name, prefix), "/")
		if dir == "history" {
			histories = append(histories, o.Name)
		} else if tli, err := strconv.ParseUint(dir, 16, 32); err == nil && rest != "" {
			seen[uint32(tli)] = true
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, name := range histories {
		f, err := wal.ParseFileName(name[strings.LastIndex(name, "/")+1:])
		if err != nil || f.Kind != wal.History {
			continue
		}
		h, err := readHistory(ctx, j.cfg.Repository, name, j.cfg.Key)
		if err != nil {
			problem(ProblemCorrupt, name, "", "%v", err)
			continue
		}
		hist[f.Timeline] = h
	}
	tlis := make([]uint32, 0, len(seen))
	for t := range seen {
		tlis = append(tlis, t)
	}
	sort.Slice(tlis, func(a, b int) bool { return tlis[a] < tlis[b] })
	return tlis, hist, nil
}

// historyEntry is one line of a timeline history file: the parent
// timeline ended, and its child began, at switchAt.
type historyEntry struct {
	parent   uint32
	switchAt wal.LSN
}

// readHistory reads a timeline history file ("<parent>\t<lsn>\t<reason>"
// lines, the last naming the timeline's own branch point).
func readHistory(ctx context.Context, repo repository.Getter, name string, key *bundle.Key) ([]historyEntry, error) {
	b, err := readHistoryObject(ctx, repo, name, name[strings.LastIndex(name, "/")+1:], key)
	if err != nil {
		return nil, err
	}
	var out []historyEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		parent, err := strconv.ParseUint(fields[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("history file: timeline %q: %v", fields[0], err)
		}
		at, err := wal.ParseLSN(fields[1])
		if err != nil {
			return nil, fmt.Errorf("history file: %v", err)
		}
		out = append(out, historyEntry{parent: uint32(parent), switchAt: at})
	}
	if len(out) == 0 || out[len(out)-1].switchAt == 0 {
		return nil, fmt.Errorf("history file without a switch point")
	}
	return out, nil
}

// readHistories reads the history files of inst's timelines, by timeline;
// unknown are the timelines whose history file could not be read.
func readHistories(ctx context.Context, repo repository.ListGetter, inst repository.Instance, key *bundle.Key) (map[uint32][]historyEntry, map[uint32]bool, error) {
	prefix := inst.HistoryName("")
	var names []string
	if err := repo.List(ctx, prefix, func(o repository.Object) error {
		names = append(names, o.Name)
		return nil
	}); err != nil {
		return nil, nil, err
	}
	hist, unknown := map[uint32][]historyEntry{}, map[uint32]bool{}
	for _, name := range names {
		f, err := wal.ParseFileName(strings.TrimPrefix(name, prefix))
		if err != nil || f.Kind != wal.History {
			continue
		}
		h, err := readHistory(ctx, repo, name, key)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			unknown[f.Timeline] = true
			continue
		}
		hist[f.Timeline] = h
	}
	return hist, unknown, nil
}

// hashObject reads an object whole and returns its size and SHA-256 (hex).
func (j *Job) hashObject(ctx context.Context, name string) (int64, string, error) {
	rc, err := j.cfg.Repository.Get(ctx, name, 0, -1)
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return n, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
