package qmp

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzQMPDecode: whatever bytes QEMU or a guest agent sends, the decoder
// returns classified messages or an error, and never panics.
func FuzzQMPDecode(f *testing.F) {
	f.Add([]byte(greeting + `{"return": {}, "id": "0"}` + "\r\n"))
	f.Add([]byte(`{"timestamp": {"seconds": 1795594438, "microseconds": 487527}, "event": "BLOCK_JOB_COMPLETED", "data": {"device": "j1", "len": 67108864, "offset": 67108864, "speed": 0, "type": "backup"}}` + "\r\n"))
	f.Add([]byte(`{"error": {"class": "GenericError", "desc": "Failed to find node with node-name='nope'"}, "id": "7"}` + "\r\n"))
	f.Add([]byte("{\n  \"return\": [\n    {\"id\": \"j1\", \"status\": \"concluded\"}\n  ]\n}\r\n"))
	f.Add([]byte(`{"return": 1}{"return": 2}`))
	f.Add([]byte(`{"return": {}, "event": "X"}`))
	f.Add([]byte(`[1, 2]`))
	f.Add([]byte(`{"error": {"desc": "no class"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder(bytes.NewReader(data))
		d.limit = 1 << 16
		for range 64 {
			m, err := d.next()
			if err != nil {
				return
			}
			switch m.kind {
			case kindGreeting:
				_ = m.version()
			case kindReturn:
				require.NotNil(t, m.Return)
			case kindError:
				require.NotEmpty(t, m.Error.Class)
				require.Error(t, decodeResponse("cmd", m, nil))
			case kindEvent:
				require.NotEmpty(t, m.event().Name)
			default:
				t.Fatalf("unclassified message %q", data)
			}
			_ = m.id()
		}
	})
}
