package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
)

// Files in the data directory hold a header and then batches:
//
//	length  uint32, little endian: of the payload
//	crc     uint32: CRC-32C (Castagnoli) of the payload
//	payload records (record.go)
//
// A batch is what one fsync made durable: the changes of one or more
// commands, never part of one. A crash in the middle of a write leaves a
// batch whose checksum fails at the end of the last log, which the next
// start drops; its commands had not been answered.

const (
	headerSize  = 16
	batchHeader = 8
	maxBatch    = 1 << 30
)

var (
	logMagic   = [8]byte{'K', 'G', 'L', 'O', 'G', 0, 0, 1}
	snapMagic  = [8]byte{'K', 'G', 'S', 'N', 'A', 'P', 0, 1}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

func header(magic [8]byte, gen uint64) []byte {
	b := append([]byte{}, magic[:]...)
	return binary.LittleEndian.AppendUint64(b, gen)
}

func appendBatch(dst, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
	return append(dst, payload...)
}

// wal is the log being appended to. Commands append their records while
// they hold the store's write lock, in the order they ran; commit makes
// them durable. Whoever commits first writes and syncs everything appended
// so far, and the callers that arrive meanwhile wait for the next such
// write: concurrent commands share one fsync (group commit).
type wal struct {
	mu       sync.Mutex
	cond     *sync.Cond
	f        *os.File
	size     int64  // bytes in the file
	pending  []byte // payload appended, not yet written
	spare    []byte
	appended uint64 // sequence number of the last append
	durable  uint64 // appends up to this one are on disk
	flushing bool
	err      error // a failed write or sync: the log takes nothing more
	written  int64 // bytes written since open, for tests and benchmarks
}

func newWAL(f *os.File, size int64) *wal {
	w := &wal{f: f, size: size}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// append adds the records in payload and returns its sequence number.
func (w *wal) append(payload []byte) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pending = append(w.pending, payload...)
	w.appended++
	return w.appended
}

// last is the sequence number of the last append.
func (w *wal) last() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appended
}

// commit returns once the append numbered seq is on disk.
func (w *wal) commit(seq uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.durable < seq {
		if w.err != nil {
			return w.err
		}
		if w.flushing {
			w.cond.Wait()
			continue
		}
		w.flushLocked()
	}
	return nil
}

// flushLocked writes and syncs what is pending, releasing mu meanwhile.
func (w *wal) flushLocked() {
	payload, upto, f := w.pending, w.appended, w.f
	w.pending, w.flushing = w.spare[:0], true
	w.mu.Unlock()
	batch := appendBatch(make([]byte, 0, batchHeader+len(payload)), payload)
	_, err := f.Write(batch)
	if err == nil {
		err = f.Sync()
	}
	w.mu.Lock()
	w.flushing = false
	w.spare = payload[:0]
	if err != nil {
		w.err = fmt.Errorf("writing the log %s: %w", f.Name(), err)
	} else {
		w.durable = upto
		w.size += int64(len(batch))
		w.written += int64(len(batch))
	}
	w.cond.Broadcast()
}

// flush makes everything appended so far durable.
func (w *wal) flush() error {
	w.mu.Lock()
	seq := w.appended
	w.mu.Unlock()
	return w.commit(seq)
}

// rotate appends to f from now on, once everything appended is durable in
// the current file. The caller holds the write lock, so nothing is
// appended meanwhile.
func (w *wal) rotate(f *os.File, size int64) (old *os.File, err error) {
	if err := w.flush(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.flushing {
		w.cond.Wait()
	}
	if w.err != nil {
		return nil, w.err
	}
	old, w.f, w.size = w.f, f, size
	return old, nil
}

func (w *wal) fileSize() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.size
}

func (w *wal) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// fail makes the log refuse every later commit with err.
func (w *wal) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
	w.mu.Unlock()
}

func (w *wal) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.flushing {
		w.cond.Wait()
	}
	if w.err == nil {
		w.err = errClosed
	}
	return w.f.Close()
}

var errClosed = errors.New("embedded store closed")

// scanResult is what reading a file of batches found.
type scanResult struct {
	good int64 // offset just after the last good batch
	torn bool  // the file ends in a batch that is not whole
}

// scanBatches reads the batches of a file after its header and passes each
// payload to fn. A batch that is not whole at the end of the file is a torn
// write, reported in the result; one followed by a good batch is damage,
// reported as an error.
func scanBatches(r io.ReaderAt, size int64, fn func(payload []byte) error) (scanResult, error) {
	off := int64(headerSize)
	var hdr [batchHeader]byte
	for off < size {
		payload, next, ok := readBatch(r, size, off, hdr[:])
		if !ok {
			if next > 0 && next < size {
				if _, _, ok := readBatch(r, size, next, hdr[:]); ok {
					return scanResult{good: off}, fmt.Errorf("damaged at byte %d, before its end (a good batch follows at byte %d): not a torn write", off, next)
				}
			}
			return scanResult{good: off, torn: true}, nil
		}
		if err := fn(payload); err != nil {
			return scanResult{good: off}, fmt.Errorf("at byte %d: %w", off, err)
		}
		off = next
	}
	return scanResult{good: off}, nil
}

// readBatch reads the batch at off. When it is not whole, next is where it
// would end if its length is believable, else 0.
func readBatch(r io.ReaderAt, size, off int64, hdr []byte) (payload []byte, next int64, ok bool) {
	if size-off < batchHeader {
		return nil, 0, false
	}
	if _, err := r.ReadAt(hdr, off); err != nil {
		return nil, 0, false
	}
	n := int64(binary.LittleEndian.Uint32(hdr))
	sum := binary.LittleEndian.Uint32(hdr[4:])
	if n == 0 || n > maxBatch || off+batchHeader+n > size {
		return nil, 0, false
	}
	next = off + batchHeader + n
	payload = make([]byte, n)
	if _, err := r.ReadAt(payload, off+batchHeader); err != nil {
		return nil, next, false
	}
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, next, false
	}
	return payload, next, true
}

// checkHeader reports whether b starts with the header of magic and gen.
func checkHeader(b []byte, magic [8]byte, gen uint64) bool {
	return len(b) >= headerSize && bytes.Equal(b[:8], magic[:]) && binary.LittleEndian.Uint64(b[8:16]) == gen
}
