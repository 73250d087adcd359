// Package qmp is a small client for the QEMU Machine Protocol (QMP), the
// JSON monitor protocol of a running QEMU, and for the QEMU guest agent
// (qemu-ga), which speaks the same JSON inside a guest.
//
// A Client connects to a monitor's unix socket, reads the greeting,
// negotiates capabilities, and then runs commands (Execute) and delivers
// asynchronous events (Subscribe) such as JOB_STATUS_CHANGE and
// BLOCK_JOB_COMPLETED. Commands carry ids, so concurrent calls on one
// Client are matched to their responses; every call returns when its ctx
// ends. QEMU's refusals are *Error values carrying its error class and
// description.
//
// An Agent talks to qemu-ga through the socket QEMU binds the guest's
// virtio-serial port to: it synchronises with guest-sync-delimited first
// and then freezes, thaws and reports the guest's file systems.
//
// QEMU serves one client per monitor socket at a time; a program that
// shares a VM with another manager gives QEMU a second -qmp socket.
package qmp
