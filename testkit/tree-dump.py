"""Dumps a directory tree as JSON lines, sorted by path: what a filesystem
view of a layer must equal. Used by the store tests to compare the mounted
`diff` with `tar -x` of the same layer. Reads xattrs, which Node cannot."""
import base64, hashlib, json, os, stat, sys

root = sys.argv[1]
out = []
for dirpath, dirnames, filenames in os.walk(root):
    for name in sorted(dirnames + filenames):
        full = os.path.join(dirpath, name)
        rel = os.path.relpath(full, root)
        st = os.lstat(full)
        m = st.st_mode
        kind = ('dir' if stat.S_ISDIR(m) else 'reg' if stat.S_ISREG(m) else 'symlink' if stat.S_ISLNK(m)
                else 'char' if stat.S_ISCHR(m) else 'block' if stat.S_ISBLK(m) else 'fifo' if stat.S_ISFIFO(m) else 'other')
        e = {'path': rel, 'type': kind, 'mode': stat.S_IMODE(m), 'uid': st.st_uid, 'gid': st.st_gid, 'mtime': int(st.st_mtime)}
        if kind == 'reg':
            h = hashlib.sha256()
            with open(full, 'rb') as f:
                for block in iter(lambda: f.read(1 << 20), b''):
                    h.update(block)
            e.update(size=st.st_size, sha256=h.hexdigest(), nlink=st.st_nlink, ino=st.st_ino)
        if kind == 'symlink':
            e['linkname'] = os.readlink(full)
        if kind in ('char', 'block'):
            e['dev'] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        if kind != 'symlink':
            names = sorted(os.listxattr(full, follow_symlinks=False))
            e['xattrs'] = {n: base64.b64encode(os.getxattr(full, n, follow_symlinks=False)).decode() for n in names}
        out.append(e)
out.sort(key=lambda e: e['path'].encode())
json.dump(out, sys.stdout)
