package wal_test

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pglogship/pglogship/wal"
)

// Summarise the archived segments of a folder, one summary per segment and
// one for the whole run, as a restore would before choosing its target.
func ExampleReader_Feed() {
	dir := "/var/lib/pglogship/archive" // 000000010000000000000001, ...
	names, err := filepath.Glob(filepath.Join(dir, "[0-9A-F]*"))
	if err != nil {
		log.Fatal(err)
	}
	r, err := wal.NewReader(wal.ReaderConfig{})
	if err != nil {
		log.Fatal(err)
	}
	for _, path := range names {
		f, err := os.Open(path)
		if err != nil {
			log.Fatal(err)
		}
		seg, err := r.Feed(filepath.Base(path), f)
		f.Close()
		if err != nil {
			log.Fatal(err)
		}
		b, _ := json.Marshal(seg) // kept in the bundle's index
		fmt.Printf("%s %s\n", filepath.Base(path), b)
	}
	all := r.Summary()
	fmt.Printf("commits from %s to %s, WAL up to %s\n", all.FirstCommit, all.LastCommit, all.End)
	for _, rp := range all.RestorePoints {
		fmt.Printf("restore point %q at %s\n", rp.Name, rp.LSN)
	}
}
