package qmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// MaxMessageSize bounds one message read from QEMU or the guest agent; a
// longer one ends the connection with ErrMessageTooLarge.
const MaxMessageSize = 16 << 20

// Errors of the wire protocol.
var (
	// ErrClosed: the connection is closed, or ended while a call waited.
	ErrClosed = errors.New("qmp connection closed")
	// ErrProtocol: the peer sent something that is not a QMP message.
	ErrProtocol = errors.New("qmp protocol error")
	// ErrMessageTooLarge: a message exceeded MaxMessageSize.
	ErrMessageTooLarge = errors.New("qmp message too large")
)

// Error classes QEMU uses (QapiErrorClass).
const (
	ClassGenericError    = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotFound  = "DeviceNotFound"
	ClassDeviceNotActive = "DeviceNotActive"
)

// Error is an error response from QEMU or the guest agent: the command
// was refused or failed.
type Error struct {
	Command string // the command that failed
	Class   string // QEMU's error class, e.g. ClassGenericError
	Desc    string // QEMU's human-readable description
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (%s)", e.Command, e.Desc, e.Class)
}

// Event is an asynchronous event QEMU sent, such as JOB_STATUS_CHANGE.
type Event struct {
	Name string          // e.g. "BLOCK_JOB_COMPLETED"
	Data json.RawMessage // the event's data object; may be empty
	Time time.Time       // QEMU's timestamp of the event
}

// Version is the QEMU version from the greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// kind is what a message is.
type kind int

const (
	kindGreeting kind = iota + 1
	kindReturn
	kindError
	kindEvent
)

// message is one JSON object of the protocol, as sent by QEMU.
type message struct {
	Greeting *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	ID json.RawMessage `json:"id"`

	kind kind
}

// parseMessage decodes and classifies one message: exactly one of a
// greeting, a return, an error or an event.
func parseMessage(raw []byte) (*message, error) {
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	n := 0
	if m.Greeting != nil {
		n++
		m.kind = kindGreeting
	}
	if m.Return != nil {
		n++
		m.kind = kindReturn
	}
	if m.Error != nil {
		n++
		m.kind = kindError
		if m.Error.Class == "" {
			return nil, fmt.Errorf("%w: error response without a class", ErrProtocol)
		}
	}
	if m.Event != "" {
		n++
		m.kind = kindEvent
	}
	if n != 1 {
		return nil, fmt.Errorf("%w: not exactly one of QMP, return, error, event", ErrProtocol)
	}
	return &m, nil
}

// id returns the message's id as the string the client sent, or "".
func (m *message) id() string {
	var s string
	if json.Unmarshal(m.ID, &s) != nil {
		return ""
	}
	return s
}

func (m *message) event() Event {
	e := Event{Name: m.Event, Data: m.Data}
	if m.Timestamp != nil {
		e.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
	}
	return e
}

func (m *message) version() Version {
	v := m.Greeting.Version
	return Version{Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package}
}

// decoder reads messages from a stream. QEMU ends each message with CRLF,
// but a message may span lines (pretty=on), so it splits on JSON values,
// not lines.
type decoder struct {
	lr    *limitReader
	dec   *json.Decoder
	limit int64 // bytes one message may take
}

func newDecoder(r io.Reader) *decoder {
	lr := &limitReader{r: r}
	return &decoder{lr: lr, dec: json.NewDecoder(lr), limit: MaxMessageSize}
}

// next returns the next message. A stream that breaks the protocol gives
// an error wrapping ErrProtocol; every error is final.
func (d *decoder) next() (*message, error) {
	d.lr.n = d.limit
	var raw json.RawMessage
	if err := d.dec.Decode(&raw); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if errors.As(err, &se) || errors.As(err, &te) {
			return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
		}
		if err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("%w: message cut short", ErrProtocol)
		}
		return nil, err
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("%w: message is not a JSON object", ErrProtocol)
	}
	return parseMessage(raw)
}

// limitReader fails with ErrMessageTooLarge once n bytes were read; the
// decoder resets n before each message.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, ErrMessageTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
