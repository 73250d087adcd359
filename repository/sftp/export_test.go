package sftp

// PacketSize is the data size of r's read and write requests.
func (r *Repo) PacketSize() int { return r.packet }
