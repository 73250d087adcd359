package qemu

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pglogship/pglogship/hypervisor"
)

func TestQEMUConfigDefaultsValidatesAndCopies(t *testing.T) {
	work := filepath.Join(t.TempDir(), "work")
	vms := []VM{{ID: "a", QMPSocket: "/run/a.qmp"}, {ID: "b", Name: "B", QMPSocket: "/run/b.qmp", Node: "drive-virtio-disk0", SSHAddr: "10.0.0.2:22"}}
	h, err := New(Config{VMs: vms, WorkDir: work})
	require.NoError(t, err)
	assert.DirExists(t, work)
	vms[0].ID = "changed" // New copied the inventory

	ms, err := h.Machines(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []hypervisor.Machine{{ID: "a", Name: "a"}, {ID: "b", Name: "B", GuestAddr: "10.0.0.2:22"}}, ms)
	assert.Equal(t, DefaultNode, h.vms["a"].Node)
	assert.Equal(t, "drive-virtio-disk0", h.vms["b"].Node)
	assert.Equal(t, DefaultQemuImg, h.cfg.QemuImg)
	assert.Equal(t, DefaultGuestAgentTimeout, h.cfg.GuestAgentTimeout)
	assert.NotNil(t, h.cfg.Clock)
	assert.NotNil(t, h.cfg.Logger)

	_, err = h.Snapshot(context.Background(), "changed", hypervisor.SnapshotOptions{})
	require.ErrorIs(t, err, hypervisor.ErrNotFound)

	for name, cfg := range map[string]Config{
		"no work dir":   {VMs: []VM{{ID: "a", QMPSocket: "/x"}}},
		"no socket":     {VMs: []VM{{ID: "a"}}, WorkDir: work},
		"empty id":      {VMs: []VM{{QMPSocket: "/x"}}, WorkDir: work},
		"repeated id":   {VMs: []VM{{ID: "a", QMPSocket: "/x"}, {ID: "a", QMPSocket: "/y"}}, WorkDir: work},
		"negative rate": {WorkDir: work, JobSpeed: -1},
	} {
		_, err := New(cfg)
		assert.Error(t, err, name)
	}
}
