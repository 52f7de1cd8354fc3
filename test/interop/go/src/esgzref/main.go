// Command esgzref drives the reference eStargz implementation
// (github.com/containerd/stargz-snapshotter/estargz v0.12.0) for the interop
// test in test/interop. It is built in GOPATH mode against the Debian source
// package (see test/interop/README.md).
//
//	esgzref build IN.tar OUT.esgz [-chunk N] [-prioritized a,b]
//	esgzref verify BLOB [TOCDIGEST]
//	esgzref ls BLOB
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

const usage = `usage:
  esgzref build IN.tar OUT.esgz [-chunk N] [-prioritized a,b,...]
  esgzref verify BLOB [TOCDIGEST]
  esgzref ls BLOB`

func main() {
	// estargz v0.12.0 panics on some malformed blobs (e.g. a footer whose TOC
	// offset is past the end); report that as an ordinary failure.
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "esgzref: panic in reference implementation: %v\n", p)
			os.Exit(3)
		}
	}()
	if len(os.Args) < 2 {
		fail(errors.New(usage))
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = cmdBuild(os.Args[2:])
	case "verify":
		err = cmdVerify(os.Args[2:])
	case "ls":
		err = cmdLs(os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Println(usage)
		return
	default:
		err = fmt.Errorf("unknown subcommand %q\n%s", os.Args[1], usage)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "esgzref: %v\n", err)
	os.Exit(1)
}

// parseArgs splits args into positionals and the given value flags (accepted
// as -name V, --name V, -name=V or --name=V, anywhere on the line).
func parseArgs(args []string, flags map[string]*string) ([]string, error) {
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		var val *string
		if eq := strings.IndexByte(name, '='); eq >= 0 {
			v := name[eq+1:]
			name = name[:eq]
			val = &v
		}
		dst, ok := flags[name]
		if !ok {
			return nil, fmt.Errorf("unknown flag %q\n%s", a, usage)
		}
		if val == nil {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag %q needs a value", a)
			}
			i++
			val = &args[i]
		}
		*dst = *val
	}
	return pos, nil
}

// ---------------------------------------------------------------- build

type buildResult struct {
	Digest           string `json:"digest"`
	Size             int64  `json:"size"`
	DiffID           string `json:"diffID"`
	TOCDigest        string `json:"tocDigest"`
	UncompressedSize int64  `json:"uncompressedSize"`
}

func cmdBuild(args []string) error {
	var chunk, prioritized string
	pos, err := parseArgs(args, map[string]*string{"chunk": &chunk, "prioritized": &prioritized})
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New(usage)
	}
	in, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	var opts []estargz.Option // default options: gzip level 9 (BestCompression)
	if chunk != "" {
		n, err := strconv.Atoi(chunk)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -chunk %q", chunk)
		}
		opts = append(opts, estargz.WithChunkSize(n))
	}
	if prioritized != "" {
		opts = append(opts, estargz.WithPrioritizedFiles(strings.Split(prioritized, ",")))
	}
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		return fmt.Errorf("estargz.Build: %w", err)
	}
	out, err := os.Create(pos[1])
	if err != nil {
		blob.Close()
		return err
	}
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(out, h), blob)
	if cerr := blob.Close(); err == nil {
		err = cerr
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", pos[1], err)
	}
	// Length (and, as a cross-check, digest) of the whole gunzipped blob.
	usize, usum, err := gunzipStat(pos[1])
	if err != nil {
		return err
	}
	if diffID := blob.DiffID().String(); diffID != usum {
		return fmt.Errorf("internal: Blob.DiffID() %s != sha256 of the gunzipped blob %s", diffID, usum)
	}
	return printJSON(buildResult{
		Digest:           "sha256:" + hex.EncodeToString(h.Sum(nil)),
		Size:             size,
		DiffID:           blob.DiffID().String(),
		TOCDigest:        blob.TOCDigest().String(),
		UncompressedSize: usize,
	})
}

func gunzipStat(name string) (int64, string, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f) // multistream by default
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.Copy(h, zr)
	if err != nil {
		return 0, "", fmt.Errorf("gunzip %s: %w", name, err)
	}
	return n, "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// ---------------------------------------------------------------- open helpers

type blobFile struct {
	f  *os.File
	sr *io.SectionReader
	r  *estargz.Reader
	// toc is the TOC JSON as stored (names not normalised), decoded
	// independently of the Reader (whose copy initFields rewrites).
	toc *estargz.JTOC
}

func openBlob(name string) (*blobFile, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	sr := io.NewSectionReader(f, 0, st.Size())
	r, err := estargz.Open(sr)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("estargz.Open: %w", err)
	}
	toc, err := readTOC(sr, r)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &blobFile{f: f, sr: sr, r: r, toc: toc}, nil
}

// readTOC decompresses the TOC member at the footer's offset (v0.12.0 has no
// accessor for the Reader's parsed TOC) and decodes it.
func readTOC(sr *io.SectionReader, r *estargz.Reader) (*estargz.JTOC, error) {
	tocOff, footerSize, err := estargz.OpenFooter(sr)
	if err != nil {
		return nil, fmt.Errorf("estargz.OpenFooter: %w", err)
	}
	end := sr.Size() - footerSize
	if tocOff < 0 || tocOff > end {
		return nil, fmt.Errorf("TOC offset %d out of range (payload ends at %d)", tocOff, end)
	}
	rc, err := new(estargz.GzipDecompressor).DecompressTOC(io.NewSectionReader(sr, tocOff, end-tocOff))
	if err != nil {
		return nil, fmt.Errorf("DecompressTOC: %w", err)
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading TOC JSON: %w", err)
	}
	if d := digest.FromBytes(raw); d != r.TOCDigest() {
		return nil, fmt.Errorf("internal: TOC JSON read at offset %d has digest %s, the Reader says %s", tocOff, d, r.TOCDigest())
	}
	toc := new(estargz.JTOC)
	if err := json.Unmarshal(raw, toc); err != nil {
		return nil, fmt.Errorf("decoding TOC JSON: %w", err)
	}
	return toc, nil
}

func cleanEntryName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// ---------------------------------------------------------------- verify

func cmdVerify(args []string) error {
	pos, err := parseArgs(args, map[string]*string{})
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return errors.New(usage)
	}
	b, err := openBlob(pos[0])
	if err != nil {
		return err
	}
	defer b.f.Close()

	var v estargz.TOCEntryVerifier
	if len(pos) == 2 {
		want, err := digest.Parse(pos[1])
		if err != nil {
			return fmt.Errorf("bad TOC digest %q: %w", pos[1], err)
		}
		if v, err = b.r.VerifyTOC(want); err != nil {
			return fmt.Errorf("VerifyTOC: %w", err)
		}
	} else if v, err = b.r.Verifiers(); err != nil {
		return fmt.Errorf("Verifiers: %w", err)
	}

	// Regular files in TOC order (a later duplicate replaces an earlier one),
	// with the number of data entries (reg + chunk) that follow each.
	type regFile struct {
		name   string
		digest string
		size   int64
		chunks int
	}
	var order []string
	files := map[string]*regFile{}
	var cur *regFile
	for _, e := range b.toc.Entries {
		switch e.Type {
		case "reg":
			name := cleanEntryName(e.Name)
			if _, seen := files[name]; !seen {
				order = append(order, name)
			}
			cur = &regFile{name: name, digest: e.Digest, size: e.Size}
			if e.Size > 0 {
				cur.chunks = 1
			}
			files[name] = cur
		case "chunk":
			if cur == nil {
				return fmt.Errorf("TOC has a chunk entry before any regular file")
			}
			cur.chunks++
		default:
			cur = nil
			if e.Type == "hardlink" {
				if _, ok := b.r.Lookup(cleanEntryName(e.Name)); !ok {
					return fmt.Errorf("hardlink %q (-> %q) does not resolve", e.Name, e.LinkName)
				}
			}
		}
	}

	n := 0
	for _, name := range order {
		f := files[name]
		if err := verifyFile(b.r, v, f.name, f.size, f.digest, f.chunks); err != nil {
			return err
		}
		n++
	}
	fmt.Printf("ok %d files\n", n)
	return nil
}

func verifyFile(r *estargz.Reader, v estargz.TOCEntryVerifier, name string, size int64, fileDigest string, wantChunks int) error {
	e, ok := r.Lookup(name)
	if !ok {
		return fmt.Errorf("%q: Lookup failed", name)
	}
	if e.Type != "reg" || e.Size != size {
		return fmt.Errorf("%q: Lookup gives type %q size %d, want reg size %d", name, e.Type, e.Size, size)
	}
	fr, err := r.OpenFile(name)
	if err != nil {
		return fmt.Errorf("%q: OpenFile: %w", name, err)
	}
	whole := sha256.New()
	var off int64
	nchunks := 0
	for off < size {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok {
			return fmt.Errorf("%q: no chunk for offset %d", name, off)
		}
		if ce.ChunkOffset != off || ce.ChunkSize <= 0 || ce.ChunkOffset+ce.ChunkSize > size {
			return fmt.Errorf("%q: chunk for offset %d is [%d,+%d) in a file of %d bytes", name, off, ce.ChunkOffset, ce.ChunkSize, size)
		}
		cv, err := v.Verifier(ce)
		if err != nil {
			return fmt.Errorf("%q: chunk at %d: %w", name, off, err)
		}
		buf := make([]byte, ce.ChunkSize)
		if n, err := fr.ReadAt(buf, ce.ChunkOffset); int64(n) != ce.ChunkSize || (err != nil && err != io.EOF) {
			return fmt.Errorf("%q: reading chunk [%d,+%d): got %d bytes: %v", name, ce.ChunkOffset, ce.ChunkSize, n, err)
		}
		cv.Write(buf)
		if !cv.Verified() {
			return fmt.Errorf("%q: chunk [%d,+%d) (blob offset %d) fails its chunk digest", name, ce.ChunkOffset, ce.ChunkSize, ce.Offset)
		}
		whole.Write(buf)
		off += ce.ChunkSize
		nchunks++
	}
	if nchunks != wantChunks {
		return fmt.Errorf("%q: read %d chunks, the TOC has %d data entries for it", name, nchunks, wantChunks)
	}
	if fileDigest != "" {
		if got := "sha256:" + hex.EncodeToString(whole.Sum(nil)); got != fileDigest {
			return fmt.Errorf("%q: content is %s, the TOC digest says %s", name, got, fileDigest)
		}
	} else if size > 0 {
		return fmt.Errorf("%q: no digest in the TOC", name)
	}
	return nil
}

// ---------------------------------------------------------------- ls

type lsEntry struct {
	Path     string            `json:"path"`
	Type     string            `json:"type"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Size     int64             `json:"size"`
	Mtime    int64             `json:"mtime"`
	Linkname *string           `json:"linkname"`
	DevMajor *int              `json:"devmajor"`
	DevMinor *int              `json:"devminor"`
	Xattrs   map[string][]byte `json:"xattrs"` // []byte marshals as base64
	SHA256   *string           `json:"sha256"`
}

func cmdLs(args []string) error {
	pos, err := parseArgs(args, map[string]*string{})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New(usage)
	}
	b, err := openBlob(pos[0])
	if err != nil {
		return err
	}
	defer b.f.Close()

	byPath := map[string]*lsEntry{}
	for _, e := range b.toc.Entries {
		if e.Type == "chunk" {
			continue
		}
		le := &lsEntry{
			Path:   cleanEntryName(e.Name),
			Type:   e.Type,
			Mode:   e.Mode & 07777,
			UID:    e.UID,
			GID:    e.GID,
			Xattrs: map[string][]byte{},
		}
		for k, v := range e.Xattrs {
			if v == nil {
				v = []byte{}
			}
			le.Xattrs[k] = v
		}
		if e.ModTime3339 != "" {
			t, err := time.Parse(time.RFC3339, e.ModTime3339)
			if err != nil {
				return fmt.Errorf("%q: bad modtime %q: %w", e.Name, e.ModTime3339, err)
			}
			le.Mtime = t.Unix()
		}
		switch e.Type {
		case "reg":
			le.Size = e.Size
		case "symlink", "hardlink":
			l := e.LinkName
			le.Linkname = &l
		case "char", "block":
			maj, min := e.DevMajor, e.DevMinor
			le.DevMajor, le.DevMinor = &maj, &min
		}
		byPath[le.Path] = le // a later duplicate wins
	}

	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths) // byte order == code point order for UTF-8

	buf := make([]byte, 1<<20)
	var out bytes.Buffer
	out.WriteString("[")
	for i, p := range paths {
		le := byPath[p]
		if le.Type == "reg" {
			sum, err := hashThroughReader(b.r, p, le.Size, buf)
			if err != nil {
				return err
			}
			le.SHA256 = &sum
		}
		if i > 0 {
			out.WriteString(",")
		}
		out.WriteString("\n")
		line, err := marshal(le)
		if err != nil {
			return err
		}
		out.Write(line)
	}
	out.WriteString("\n]\n")
	_, err = os.Stdout.Write(out.Bytes())
	return err
}

// hashThroughReader reads a regular file's content through the reference
// Reader (Lookup + OpenFile) and returns its hex sha256.
func hashThroughReader(r *estargz.Reader, name string, size int64, buf []byte) (string, error) {
	e, ok := r.Lookup(name)
	if !ok || e.Type != "reg" {
		return "", fmt.Errorf("%q: Lookup does not give a regular file", name)
	}
	fr, err := r.OpenFile(name)
	if err != nil {
		return "", fmt.Errorf("%q: OpenFile: %w", name, err)
	}
	if fr.Size() != size {
		return "", fmt.Errorf("%q: OpenFile size %d, the TOC says %d", name, fr.Size(), size)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, fr, buf); err != nil {
		return "", fmt.Errorf("%q: reading: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func marshal(v interface{}) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func printJSON(v interface{}) error {
	line, err := marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", line)
	return err
}
