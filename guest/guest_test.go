package guest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckRequirements(t *testing.T) {
	good := Instance{Version: 150018, WALLevel: "replica", ArchiveMode: "on"}
	ours := func(cmd string) bool { return cmd == "ours" }
	tests := []struct {
		name   string
		mutate func(*Instance)
		want   error
	}{
		{"ok", func(*Instance) {}, nil},
		{"logical ok", func(i *Instance) { i.WALLevel = "logical" }, nil},
		{"archive always ok", func(i *Instance) { i.ArchiveMode = "always" }, nil},
		{"our command ok", func(i *Instance) { i.ArchiveCommand = "ours" }, nil},
		{"pg12", func(i *Instance) { i.Version = 120016 }, ErrPostgresTooOld},
		{"pg13", func(i *Instance) { i.Version = 130023 }, nil},
		{"pg18", func(i *Instance) { i.Version = 180004 }, nil},
		{"pg19", func(i *Instance) { i.Version = 190000 }, ErrPostgresTooNew},
		{"pg20 devel", func(i *Instance) { i.Version = 200000 }, ErrPostgresTooNew},
		{"minimal", func(i *Instance) { i.WALLevel = "minimal" }, ErrWALLevel},
		{"archive off", func(i *Instance) { i.ArchiveMode = "off" }, ErrArchiveModeOff},
		{"foreign command", func(i *Instance) { i.ArchiveCommand = "cp %p /mnt/%f" }, ErrArchiveCommandTaken},
		{"library", func(i *Instance) { i.ArchiveLibrary = "basic_archive" }, ErrArchiveCommandTaken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := good
			tt.mutate(&inst)
			err := CheckRequirements(inst, ours)
			if tt.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tt.want)
			}
		})
	}
}
