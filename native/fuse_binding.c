/*
 * estargz-store's FUSE binding: the kernel's FUSE protocol over /dev/fuse,
 * driven from Node's own event loop. See native/README.md for why.
 *
 * The native side only moves bytes: it reads requests when the fd is
 * readable, decodes their headers and arguments into a shared Float64Array
 * (one row per request) plus a JS array of names, calls ONE JS callback per
 * batch, and encodes replies from numbers the JS side put in a second shared
 * Float64Array (the "scratch"). Every decision (INIT negotiation, errno,
 * timeouts, which entries go into a directory listing) is made in
 * TypeScript (src/fuse/).
 *
 * Nothing here blocks: the fd is O_NONBLOCK and watched by a uv_poll on the
 * main loop; writes to /dev/fuse never block (the kernel consumes a reply
 * within the write call).
 */
#define _GNU_SOURCE /* memfd_create */
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>
#include <linux/fuse.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <poll.h>
#include <sched.h>
#include <time.h>

/* Layouts shared with src/fuse/protocol.ts (keep in step). */
#define REQ_STRIDE 12      /* opcode unique nodeid uid gid pid a0..a5 */
#define MAX_BATCH 64       /* requests per wake-up of the JS thread */
#define ENTRY_STRIDE 17    /* nodeid gen entry_valid attr_valid attr[12] dir_off */
#define ATTR_AT 4          /* attr fields start at this index of an entry row */
/* attr fields: ino size blocks atime mtime ctime mode nlink uid gid rdev blksize */

/* Requests are at most max_write (1 MiB) of data plus headers. */
#define IN_BUF_SIZE ((1u << 20) + 4096)
/* Directory listings are at most max_pages pages. */
#define OUT_BUF_SIZE (1u << 20)

/*
 * The in-flight journal (see native/README.md): a shared mapping, one slot
 * per request read and not yet answered, so that a successor can answer what
 * a dead process had read. Layout (shared with src/fuse/keeper-journal.ts):
 * a 64-byte header (magic, version, slots, slot size, flags), then `slots`
 * slots of J_SLOT_SIZE bytes. The slots are an open-addressing table keyed by
 * unique (home slot: (unique >> 1) & (slots - 1); the kernel's uniques step
 * by 2).
 *
 * With J_F_READBUF, the read buffer itself (IN_BUF_SIZE) follows the slots
 * at the next page boundary, and a session read()s each request straight
 * into it: a request is in the memfd the moment the kernel has copied it
 * out, so one whose process was killed before recording it in a slot (right
 * after read() returned, or before read() even got back to user space) is
 * not lost; the kernel would otherwise keep its caller waiting for good. The
 * fuse_in_header's `len` there is zeroed once the request is in a slot (or
 * needs none): a successor adopts a buffered request whose len is not zero
 * (see session_adopt_journal). The memfd is sparse: only the pages requests
 * touch are allocated (one, but for large WRITEs). Journals without the flag
 * (made by an older keeper) still work, without this protection.
 */
#define J_MAGIC 0x4e524a46u /* "FJRN" */
#define J_VERSION 1u
#define J_F_READBUF 1u
#define J_HEADER 64
#define J_NAME_MAX 256
#define J_SLOT_SIZE 384
#define J_FREE 0u
#define J_LIVE 1u

typedef struct {
  uint32_t magic, version, slots, slot_size, flags;
  uint8_t reserved[44];
} jheader_t;

typedef struct {
  uint32_t state;    /* J_FREE or J_LIVE: set live last when recording, free after the reply is written */
  uint32_t name_len; /* bytes of name (no NUL); names longer than J_NAME_MAX are cut */
  uint64_t unique;
  double row[REQ_STRIDE]; /* the request exactly as decoded for JS */
  char name[J_NAME_MAX];
} jslot_t;

typedef struct {
  napi_env env;
  int fd;
  int polling;
  uv_poll_t *poll;
  napi_ref callback;
  napi_ref reqs_ref;
  napi_ref scratch_ref;
  napi_async_context actx;
  double *reqs;
  double *scratch;
  size_t scratch_len;
  uint8_t *inbuf;
  uint8_t *outbuf;
  /* the journal: mapping, its length, slot count (a power of two), live slots */
  uint8_t *jmap;
  size_t jlen;
  uint32_t jslots;
  uint32_t jused;
  int paused; /* reading stopped because the journal is full (resumes on a reply) */
  uint8_t *heapbuf; /* the read buffer, unless the journal has one (inbuf points to either) */
  int jbuf;         /* inbuf is the journal's read buffer (J_F_READBUF) */
  long test_kill_after; /* tests only: SIGKILL itself after this many requests read, before recording the last */
  /* busy polling (see on_readable): how long to keep reading after a batch
     while the loop is otherwise idle (0: off), and the loop's epoll fd */
  uint64_t busy_poll_ns;
  /* How often a spin finds the next request (EWMA, 0..POLL_SCORE_ONE; see
     on_readable), and wake-ups since the last probe while it is low. */
  uint32_t poll_score;
  uint32_t poll_skipped;
  int loop_fd;
  uv_loop_t *loop;
  uint32_t inflight; /* requests read that await a reply from this process */
  uint64_t last_replied; /* unique of the last reply written (see lastReplied) */
  uint64_t refused;      /* replies the kernel refused (ENOENT: interrupted and gone, or answered already) */
} session_t;

#define CHECK(call)                                                     \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error(env, NULL, "fuse_binding: " #call " failed");   \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value e, m, code;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &code);
  napi_set_named_property(env, e, "errno", code);
  napi_throw(env, e);
  return NULL;
}

static double num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

/* Seconds (fractional) split into whole seconds and nanoseconds. */
static void split_time(double t, uint64_t *sec, uint32_t *nsec) {
  if (!(t > 0)) { *sec = 0; *nsec = 0; return; }
  *sec = (uint64_t)t;
  *nsec = (uint32_t)((t - (double)*sec) * 1e9);
  if (*nsec > 999999999u) *nsec = 999999999u;
}

static void fill_attr(struct fuse_attr *a, const double *d) {
  memset(a, 0, sizeof *a);
  a->ino = (uint64_t)d[0];
  a->size = (uint64_t)d[1];
  a->blocks = (uint64_t)d[2];
  split_time(d[3], &a->atime, &a->atimensec);
  split_time(d[4], &a->mtime, &a->mtimensec);
  split_time(d[5], &a->ctime, &a->ctimensec);
  a->mode = (uint32_t)d[6];
  a->nlink = (uint32_t)d[7];
  a->uid = (uint32_t)d[8];
  a->gid = (uint32_t)d[9];
  a->rdev = (uint32_t)d[10];
  a->blksize = (uint32_t)d[11];
}

static void fill_entry(struct fuse_entry_out *e, const double *d) {
  memset(e, 0, sizeof *e);
  e->nodeid = (uint64_t)d[0];
  e->generation = (uint64_t)d[1];
  uint64_t s; uint32_t ns;
  split_time(d[2], &s, &ns); e->entry_valid = s; e->entry_valid_nsec = ns;
  split_time(d[3], &s, &ns); e->attr_valid = s; e->attr_valid_nsec = ns;
  fill_attr(&e->attr, d + ATTR_AT);
}

/* ------------------------------------------------------------------------ */
/* The journal                                                               */

static inline jslot_t *jslot(uint8_t *map, uint32_t i) {
  return (jslot_t *)(map + J_HEADER + (size_t)i * J_SLOT_SIZE);
}

static inline uint32_t j_home(uint64_t unique, uint32_t slots) {
  return (uint32_t)(unique >> 1) & (slots - 1);
}

/* Where the read buffer starts in a journal of `slots` slots, and the size of the whole journal. */
static inline size_t j_stage_off(uint32_t slots) {
  return (J_HEADER + (size_t)slots * J_SLOT_SIZE + 4095) & ~(size_t)4095;
}
static inline size_t j_size(uint32_t slots) {
  return j_stage_off(slots) + IN_BUF_SIZE;
}

/* A journal's read buffer, or NULL if it has none. */
static inline const struct fuse_in_header *j_readbuf(uint8_t *map, size_t len) {
  const jheader_t *h = (const jheader_t *)map;
  if (!(h->flags & J_F_READBUF) || len < j_size(h->slots)) return NULL;
  return (const struct fuse_in_header *)(map + j_stage_off(h->slots));
}

/* A request read into a journal's buffer and maybe not recorded in a slot:
   its length (0: none). */
static inline uint32_t j_staged_len(const struct fuse_in_header *h) {
  uint32_t len = h ? __atomic_load_n(&h->len, __ATOMIC_ACQUIRE) : 0;
  return len >= sizeof *h && len <= IN_BUF_SIZE ? len : 0;
}

/* The request in the buffer is recorded in a slot (or needs none). */
static inline void j_unstage(session_t *s) {
  if (s->jbuf) __atomic_store_n(&((struct fuse_in_header *)s->inbuf)->len, 0u, __ATOMIC_RELEASE);
}

/* Maps a journal fd; returns NULL unless it is one (magic, version, sizes). */
static uint8_t *j_map(int fd, size_t *len, uint32_t *slots) {
  struct stat st;
  if (fstat(fd, &st) < 0 || (size_t)st.st_size < J_HEADER) { errno = EINVAL; return NULL; }
  uint8_t *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return NULL;
  jheader_t *h = (jheader_t *)m;
  uint32_t n = h->slots;
  if (h->magic != J_MAGIC || h->version != J_VERSION || h->slot_size != J_SLOT_SIZE || n == 0 || (n & (n - 1)) ||
      J_HEADER + (size_t)n * J_SLOT_SIZE > (size_t)st.st_size) {
    munmap(m, (size_t)st.st_size);
    errno = EINVAL;
    return NULL;
  }
  *len = (size_t)st.st_size;
  *slots = n;
  return m;
}

/* The slot of `map` holding `unique`, or -1. Probes from the home slot past
   holes (no tombstones: a live entry is always found before wrapping around). */
static int64_t j_lookup(uint8_t *map, uint32_t n, uint64_t unique) {
  uint32_t i = j_home(unique, n);
  for (uint32_t k = 0; k < n; k++, i = (i + 1) & (n - 1)) {
    jslot_t *e = jslot(map, i);
    if (e->state == J_LIVE && e->unique == unique) return i;
  }
  return -1;
}

static int64_t j_find(session_t *s, uint64_t unique) {
  if (!s->jmap || s->jused == 0) return -1;
  return j_lookup(s->jmap, s->jslots, unique);
}

/* Records a request (the caller checked there is room). The slot turns live
   only after its contents are written, so a reader after a crash never sees
   a half-written entry. Plain stores: no syscall, no lock (one thread). */
static void j_record(session_t *s, uint64_t unique, const double *row, const char *name, size_t name_len) {
  uint32_t n = s->jslots, i = j_home(unique, n), k = 0;
  jslot_t *e = jslot(s->jmap, i);
  while (e->state != J_FREE) {
    /* Full only if someone else wrote live slots into our journal: not journaled. */
    if (++k == n) return;
    i = (i + 1) & (n - 1);
    e = jslot(s->jmap, i);
  }
  e->unique = unique;
  memcpy(e->row, row, sizeof e->row);
  if (name_len > J_NAME_MAX) name_len = J_NAME_MAX;
  e->name_len = (uint32_t)name_len;
  if (name_len) memcpy(e->name, name, name_len);
  __atomic_store_n(&e->state, J_LIVE, __ATOMIC_RELEASE);
  s->jused++;
}

static void on_readable(uv_poll_t *handle, int status, int events);

/* The reply to `unique` went out (or the kernel no longer wanted it). */
static void j_clear(session_t *s, uint64_t unique) {
  int64_t i = j_find(s, unique);
  if (i < 0) return;
  __atomic_store_n(&jslot(s->jmap, (uint32_t)i)->state, J_FREE, __ATOMIC_RELEASE);
  s->jused--;
  if (s->paused && s->poll) {
    s->paused = 0;
    uv_poll_start(s->poll, UV_READABLE, on_readable);
  }
}

/* Requests the kernel expects no reply to are not journaled. */
static int needs_reply(uint32_t opcode) {
  return opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET && opcode != FUSE_INTERRUPT;
}

/* ------------------------------------------------------------------------ */
/* Reading requests                                                          */

static napi_value str_n(napi_env env, const char *p, size_t max) {
  napi_value v;
  napi_create_string_utf8(env, p, strnlen(p, max), &v);
  return v;
}

/*
 * Decodes one request into row `n` of the shared array and, for requests
 * that carry a name (or a forget list), element `n` of `extras`. Returns 0
 * for requests that need nothing from JS (INTERRUPT: we never cancel work).
 */
static int decode(session_t *s, const uint8_t *buf, int n, size_t len, napi_value extras) {
  napi_env env = s->env;
  if (len < sizeof(struct fuse_in_header)) return 0;
  const struct fuse_in_header *h = (const struct fuse_in_header *)buf;
  const uint8_t *body = buf + sizeof *h;
  size_t blen = len - sizeof *h;
  double *r = s->reqs + (size_t)n * REQ_STRIDE;
  memset(r, 0, REQ_STRIDE * sizeof(double));
  r[0] = h->opcode;
  r[1] = (double)h->unique;
  r[2] = (double)h->nodeid;
  r[3] = h->uid;
  r[4] = h->gid;
  r[5] = h->pid;
  const char *name = NULL;
  size_t name_max = 0;
#define ARG(type) ((blen >= sizeof(type)) ? (const type *)body : NULL)
#define NAME_AFTER(type) do { if (blen > sizeof(type)) { name = (const char *)body + sizeof(type); name_max = blen - sizeof(type); } } while (0)
  switch (h->opcode) {
    case FUSE_INTERRUPT:
      return 0;
    case FUSE_INIT: {
      const struct fuse_init_in *in = ARG(struct fuse_init_in);
      if (in) { r[6] = in->major; r[7] = in->minor; r[8] = in->max_readahead; r[9] = in->flags; r[10] = in->flags2; }
      else if (blen >= 16) { /* pre-7.36 kernels send the short struct */
        const uint32_t *w = (const uint32_t *)body;
        r[6] = w[0]; r[7] = w[1]; r[8] = w[2]; r[9] = w[3];
      }
      break;
    }
    case FUSE_LOOKUP: case FUSE_UNLINK: case FUSE_RMDIR:
      name = (const char *)body; name_max = blen;
      break;
    case FUSE_SYMLINK: /* name, then target */
      name = (const char *)body; name_max = blen;
      break;
    case FUSE_FORGET: {
      const struct fuse_forget_in *in = ARG(struct fuse_forget_in);
      if (in) r[6] = (double)in->nlookup;
      break;
    }
    case FUSE_BATCH_FORGET: {
      const struct fuse_batch_forget_in *in = ARG(struct fuse_batch_forget_in);
      if (!in) return 0;
      size_t count = in->count;
      size_t room = (blen - sizeof *in) / sizeof(struct fuse_forget_one);
      if (count > room) count = room;
      const struct fuse_forget_one *one = (const struct fuse_forget_one *)(body + sizeof *in);
      napi_value ab, ta;
      void *data;
      napi_create_arraybuffer(env, count * 2 * sizeof(double), &data, &ab);
      double *d = data;
      for (size_t i = 0; i < count; i++) { d[2 * i] = (double)one[i].nodeid; d[2 * i + 1] = (double)one[i].nlookup; }
      napi_create_typedarray(env, napi_float64_array, count * 2, ab, 0, &ta);
      napi_set_element(env, extras, n, ta);
      r[6] = (double)count;
      break;
    }
    case FUSE_GETATTR: {
      const struct fuse_getattr_in *in = ARG(struct fuse_getattr_in);
      if (in) { r[6] = in->getattr_flags; r[7] = (double)in->fh; }
      break;
    }
    case FUSE_SETATTR: {
      const struct fuse_setattr_in *in = ARG(struct fuse_setattr_in);
      if (in) { r[6] = in->valid; r[7] = (double)in->size; r[8] = in->mode; }
      break;
    }
    case FUSE_MKNOD: {
      const struct fuse_mknod_in *in = ARG(struct fuse_mknod_in);
      if (in) { r[6] = in->mode; r[7] = in->rdev; }
      NAME_AFTER(struct fuse_mknod_in);
      break;
    }
    case FUSE_MKDIR: {
      const struct fuse_mkdir_in *in = ARG(struct fuse_mkdir_in);
      if (in) r[6] = in->mode;
      NAME_AFTER(struct fuse_mkdir_in);
      break;
    }
    case FUSE_RENAME: {
      const struct fuse_rename_in *in = ARG(struct fuse_rename_in);
      if (in) r[6] = (double)in->newdir;
      NAME_AFTER(struct fuse_rename_in);
      break;
    }
    case FUSE_RENAME2: {
      const struct fuse_rename2_in *in = ARG(struct fuse_rename2_in);
      if (in) { r[6] = (double)in->newdir; r[7] = in->flags; }
      NAME_AFTER(struct fuse_rename2_in);
      break;
    }
    case FUSE_LINK: {
      const struct fuse_link_in *in = ARG(struct fuse_link_in);
      if (in) r[6] = (double)in->oldnodeid;
      NAME_AFTER(struct fuse_link_in);
      break;
    }
    case FUSE_OPEN: case FUSE_OPENDIR: {
      const struct fuse_open_in *in = ARG(struct fuse_open_in);
      if (in) r[6] = in->flags;
      break;
    }
    case FUSE_CREATE: {
      const struct fuse_create_in *in = ARG(struct fuse_create_in);
      if (in) { r[6] = in->flags; r[7] = in->mode; }
      NAME_AFTER(struct fuse_create_in);
      break;
    }
    case FUSE_READ: case FUSE_READDIR: case FUSE_READDIRPLUS: {
      const struct fuse_read_in *in = ARG(struct fuse_read_in);
      if (in) { r[6] = (double)in->offset; r[7] = in->size; r[8] = (double)in->fh; }
      break;
    }
    case FUSE_WRITE: {
      const struct fuse_write_in *in = ARG(struct fuse_write_in);
      if (in) { r[6] = (double)in->offset; r[7] = in->size; r[8] = (double)in->fh; }
      break;
    }
    case FUSE_RELEASE: case FUSE_RELEASEDIR: {
      const struct fuse_release_in *in = ARG(struct fuse_release_in);
      if (in) r[6] = (double)in->fh;
      break;
    }
    case FUSE_GETXATTR: {
      const struct fuse_getxattr_in *in = ARG(struct fuse_getxattr_in);
      if (in) r[6] = in->size;
      NAME_AFTER(struct fuse_getxattr_in);
      break;
    }
    case FUSE_LISTXATTR: {
      const struct fuse_getxattr_in *in = ARG(struct fuse_getxattr_in);
      if (in) r[6] = in->size;
      break;
    }
    case FUSE_SETXATTR: {
      /* the struct grew in 7.33 (FUSE_SETXATTR_EXT), which we do not negotiate */
      if (blen > FUSE_COMPAT_SETXATTR_IN_SIZE) { name = (const char *)body + FUSE_COMPAT_SETXATTR_IN_SIZE; name_max = blen - FUSE_COMPAT_SETXATTR_IN_SIZE; }
      break;
    }
    case FUSE_REMOVEXATTR:
      name = (const char *)body; name_max = blen;
      break;
    case FUSE_ACCESS: {
      const struct fuse_access_in *in = ARG(struct fuse_access_in);
      if (in) r[6] = in->mask;
      break;
    }
    default:
      break;
  }
#undef ARG
#undef NAME_AFTER
  if (name && name_max > 0) napi_set_element(env, extras, n, str_n(env, name, name_max));
  if (s->jmap && needs_reply(h->opcode)) j_record(s, h->unique, r, name, name ? strnlen(name, name_max) : 0);
  return 1;
}

static void deliver(session_t *s, int count, napi_value extras, int ended) {
  napi_env env = s->env;
  napi_value cb, recv, argv[3], result;
  napi_get_reference_value(env, s->callback, &cb);
  napi_get_global(env, &recv); /* make_callback needs an object receiver */
  napi_create_int32(env, count, &argv[0]);
  argv[1] = extras;
  napi_create_int32(env, ended, &argv[2]);
  /* make_callback (not call_function): runs the microtask queue afterwards,
     so replies from already-resolved promises go out in this same turn. */
  if (napi_make_callback(env, s->actx, recv, cb, 3, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

static void stop_poll(session_t *s);

static int drain(session_t *s, int status);

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Something other than our fd is ready on Node's loop (a worker's message, a
   socket, a timer's fd...): level-triggered epoll reports its fd readable. */
static int loop_has_other_work(session_t *s) {
  struct pollfd p = { .fd = s->loop_fd, .events = POLLIN, .revents = 0 };
  return poll(&p, 1, 0) > 0;
}

/* At most this long in one wake-up, so timers and immediates are never held
   back more than this by a steady stream of requests. */
#define BUSY_POLL_BUDGET_NS 2000000u

/* The spin's hit rate, fixed point: polling goes on while at least half of
   its waits find the next request; below that, one wake-up in
   POLL_PROBE_EVERY spins anyway, so a caller that speeds up is noticed. */
#define POLL_SCORE_ONE 1024u
#define POLL_PROBE_EVERY 16u

/* A spin-wait hint to the CPU (and to a hypervisor's pause-loop exiting). */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() __asm__ volatile("" ::: "memory")
#endif

/*
 * Busy polling. A caller like `find` or `cat` sends one request, sleeps until
 * the reply, then sends the next a few microseconds later. If the JS thread
 * goes back to epoll_wait in between, each request pays for putting it to
 * sleep and waking it again: on a VM whose idle vCPU halts, ~30 µs of a
 * ~60 µs round trip. So after a batch whose every request was answered at
 * once, and while nothing else is ready on the loop, keep reading the
 * (non-blocking) fd for up to busy_poll_ns. It stops as soon as a request is
 * left waiting (its answer needs a worker, the disk or the network: the CPU
 * is theirs, and their event wakes the loop) or any other fd is ready. What
 * poll cannot see on libuv's epoll fd (due timers, immediates) waits at most
 * BUSY_POLL_BUDGET_NS.
 *
 * A spin that finds nothing is CPU taken from the caller and the decode
 * workers (two cores here), so a running hit rate (poll_score) keeps the
 * spin on while most of its waits find the next request, and turns it off
 * (but for a probe every POLL_PROBE_EVERY wake-ups) while they do not. And
 * how it waits matters: measured on a
 * 2-vCPU VM, `find -exec cat {} +` over 4,629 cached files (a GETATTR per
 * file) took 0.64 s with a sched_yield between reads of the fd and 0.50 s
 * with no polling at all, while a spin on the CPU's pause hint with a
 * sched_yield every 8 rounds took the same as no polling (0.57 vs 0.56 s,
 * 8 passes each, interleaved) and kept polling's gain on a tight stat loop
 * (24 µs per GETATTR round trip against 34 µs).
 */
static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  session_t *s = handle->data;
  if (drain(s, status) <= 0 || s->busy_poll_ns == 0 || s->loop_fd < 0) return;
  if (s->poll_score < POLL_SCORE_ONE / 2 && ++s->poll_skipped < POLL_PROBE_EVERY) return;
  s->poll_skipped = 0;
  uint64_t t = now_ns();
  const uint64_t end = t + BUSY_POLL_BUDGET_NS;
  uint64_t deadline = t + s->busy_poll_ns;
  unsigned rounds = 0;
  while (s->poll && !s->paused && s->inflight == 0 && t < end) {
    int k = drain(s, 0);
    if (k < 0) break;
    t = now_ns();
    /* Each wait for the next request counts: found within the spin (a hit) or not (a miss). */
    if (k > 0) {
      deadline = t + s->busy_poll_ns;
      s->poll_score += (POLL_SCORE_ONE - s->poll_score) / 8;
    } else if (t >= deadline) {
      s->poll_score -= s->poll_score / 8;
      break;
    }
    else if (loop_has_other_work(s)) break;
    /* Spin in user space, and give the CPU away only every few rounds: a
       sched_yield per round made cross-CPU callers slower (see above), while
       a caller or worker queued on this CPU still runs within ~20 µs. */
    else if (++rounds % 8 == 0) sched_yield();
    else for (int p = 0; p < 64; p++) cpu_relax();
  }
  /* (A wait cut short by other work, a reply awaited or another fd, says nothing either way.) */
  /* The loop's clock stood still while polling: timers set from now on must
     count from the real time, not fire early. */
  if (s->loop) uv_update_time(s->loop);
}

static int drain(session_t *s, int status) {
  napi_env env = s->env;
  /* Made on the first request read: busy polling calls this many times for
     nothing, and a handle scope plus an array each time is garbage. */
  napi_handle_scope scope = NULL;
  napi_value extras = NULL;
#define NEED_EXTRAS() do { if (!scope) { napi_open_handle_scope(env, &scope); napi_create_array(env, &extras); } } while (0)
  int n = 0, ended = status < 0 ? -status : 0;
  while (!ended && n < MAX_BATCH) {
    if (s->jmap && s->jused >= s->jslots) {
      /* Never read a request the journal cannot hold: wait for a reply. */
      s->paused = 1;
      uv_poll_stop(s->poll);
      break;
    }
    ssize_t got = read(s->fd, s->inbuf, IN_BUF_SIZE);
    if (got < 0) {
      /* A failed read hands over no request (the kernel ends one it could not copy). */
      j_unstage(s);
      /* ENOENT: the request was interrupted between poll and read */
      if (errno == EINTR || errno == ENOENT) continue;
      if (errno == EAGAIN) break;
      ended = errno; /* ENODEV: unmounted; anything else: the connection is unusable */
      break;
    }
    /* Tests: die where the request is read but in no slot (see setJournal). */
    if (s->test_kill_after > 0 && needs_reply(((struct fuse_in_header *)s->inbuf)->opcode) && --s->test_kill_after == 0)
      kill(getpid(), SIGKILL);
    NEED_EXTRAS();
    if (decode(s, s->inbuf, n, (size_t)got, extras)) {
      if (needs_reply(((struct fuse_in_header *)s->inbuf)->opcode)) s->inflight++;
      n++;
    }
    /* Recorded in a slot now: the buffer no longer holds a request to adopt. */
    j_unstage(s);
  }
  if (ended) stop_poll(s);
  if (n > 0 || ended) {
    NEED_EXTRAS();
    deliver(s, n, extras, ended);
  }
  if (scope) napi_close_handle_scope(env, scope);
  return ended ? -1 : n;
#undef NEED_EXTRAS
}

static void on_poll_closed(uv_handle_t *h) { free(h); }

static void stop_poll(session_t *s) {
  if (!s->poll) return;
  uv_poll_stop(s->poll);
  uv_close((uv_handle_t *)s->poll, on_poll_closed);
  s->poll = NULL;
}

/* ------------------------------------------------------------------------ */
/* Session object                                                            */

static void session_free(napi_env env, void *data, void *hint) {
  (void)hint;
  session_t *s = data;
  stop_poll(s);
  if (s->callback) napi_delete_reference(env, s->callback);
  if (s->reqs_ref) napi_delete_reference(env, s->reqs_ref);
  if (s->scratch_ref) napi_delete_reference(env, s->scratch_ref);
  if (s->actx) napi_async_destroy(env, s->actx);
  if (s->jmap) munmap(s->jmap, s->jlen);
  free(s->heapbuf);
  free(s->outbuf);
  free(s);
}

static int typed_f64(napi_env env, napi_value v, double **data, size_t *len) {
  napi_typedarray_type t;
  void *p;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, len, &p, &ab, &off) != napi_ok || t != napi_float64_array) return 0;
  *data = p;
  return 1;
}

/* new Session(fd, callback(count, extras, endedErrno), requests: Float64Array, scratch: Float64Array) */
static napi_value session_new(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], self;
  CHECK(napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  if (argc < 4) { napi_throw_type_error(env, NULL, "Session(fd, callback, requests, scratch)"); return NULL; }
  session_t *s = calloc(1, sizeof *s);
  s->env = env;
  s->fd = (int)num(env, argv[0]);
  size_t rlen;
  if (!typed_f64(env, argv[2], &s->reqs, &rlen) || rlen < MAX_BATCH * REQ_STRIDE ||
      !typed_f64(env, argv[3], &s->scratch, &s->scratch_len) || s->scratch_len < ENTRY_STRIDE) {
    free(s);
    napi_throw_type_error(env, NULL, "requests/scratch must be Float64Arrays of the documented sizes");
    return NULL;
  }
  s->heapbuf = malloc(IN_BUF_SIZE);
  s->inbuf = s->heapbuf;
  s->loop_fd = -1;
  s->outbuf = malloc(OUT_BUF_SIZE);
  napi_create_reference(env, argv[1], 1, &s->callback);
  napi_create_reference(env, argv[2], 1, &s->reqs_ref);
  napi_create_reference(env, argv[3], 1, &s->scratch_ref);
  napi_value name;
  napi_create_string_utf8(env, "fuse", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &s->actx);
  CHECK(napi_wrap(env, self, s, session_free, NULL, NULL));
  return self;
}

static session_t *unwrap(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  session_t *s = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) return NULL;
  if (napi_unwrap(env, self, (void **)&s) != napi_ok) { napi_throw_error(env, NULL, "not a Session"); return NULL; }
  return s;
}

/* start(): O_NONBLOCK and watch the fd on the main loop */
static napi_value session_start(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  session_t *s = unwrap(env, info, &argc, NULL);
  if (!s) return NULL;
  if (s->poll) return NULL;
  int fl = fcntl(s->fd, F_GETFL);
  if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0) return throw_errno(env, "fcntl(O_NONBLOCK)", errno);
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  s->poll = malloc(sizeof *s->poll);
  int rc = uv_poll_init(loop, s->poll, s->fd);
  if (rc < 0) { free(s->poll); s->poll = NULL; return throw_errno(env, "uv_poll_init", -rc); }
  s->poll->data = s;
  s->loop = loop;
  s->loop_fd = uv_backend_fd(loop);
  uv_poll_start(s->poll, UV_READABLE, on_readable);
  return NULL;
}

/* Numbers the session keeps, one getter for all (the property's data says which):
   lastReplied(): the unique of the last reply written, so that JS can tell
     whether a handler that threw had already answered (a second answer would
     be refused by the kernel, but would count a request twice here);
   refusedReplies(): replies the kernel refused with ENOENT so far;
   busyPollScore(): the spin's running hit rate, 0..1 (1 until a wait misses). */
enum { NUM_LAST_REPLIED, NUM_REFUSED_REPLIES, NUM_BUSY_POLL_SCORE };

static napi_value session_number(napi_env env, napi_callback_info info) {
  napi_value self;
  void *which = NULL;
  size_t argc = 0;
  session_t *s = NULL;
  if (napi_get_cb_info(env, info, &argc, NULL, &self, &which) != napi_ok) return NULL;
  if (napi_unwrap(env, self, (void **)&s) != napi_ok) { napi_throw_error(env, NULL, "not a Session"); return NULL; }
  double v = 0;
  switch ((intptr_t)which) {
    case NUM_LAST_REPLIED: v = (double)s->last_replied; break;
    case NUM_REFUSED_REPLIES: v = (double)s->refused; break;
    case NUM_BUSY_POLL_SCORE: v = (double)s->poll_score / POLL_SCORE_ONE; break;
  }
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

/* setBusyPoll(microseconds): see on_readable (0 turns it off) */
static napi_value session_set_busy_poll(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  session_t *s = unwrap(env, info, &argc, argv);
  if (!s) return NULL;
  double us = argc > 0 ? num(env, argv[0]) : 0;
  s->busy_poll_ns = us > 0 ? (uint64_t)((us < 1000 ? us : 1000) * 1000) : 0; /* the config's range: 0–1000 µs */
  s->poll_score = POLL_SCORE_ONE; /* on until spins stop finding requests */
  return NULL;
}

/* stop(): no more reads (the fd stays open: the caller owns it) */
static napi_value session_stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  session_t *s = unwrap(env, info, &argc, NULL);
  if (s) { stop_poll(s); s->paused = 0; }
  return NULL;
}

/* setJournal(fd): journal every request read from now on into this journal
   (see createJournal). The mapping stays until the session is collected. */
static napi_value session_set_journal(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  session_t *s = unwrap(env, info, &argc, argv);
  if (!s) return NULL;
  if (s->jmap) { napi_throw_error(env, NULL, "the session already has a journal"); return NULL; }
  size_t len; uint32_t slots;
  uint8_t *m = j_map((int)num(env, argv[0]), &len, &slots);
  if (!m) return throw_errno(env, "journal", errno);
  s->jmap = m; s->jlen = len; s->jslots = slots; s->jused = 0;
  for (uint32_t i = 0; i < slots; i++) if (jslot(m, i)->state == J_LIVE) s->jused++;
  /* Read straight into the journal (see its layout): no request is ever held
     only in this process's memory. */
  const struct fuse_in_header *rb = j_readbuf(m, len);
  if (rb) {
    s->inbuf = (uint8_t *)rb;
    s->jbuf = 1;
    free(s->heapbuf);
    s->heapbuf = NULL;
  }
  /* A test hook (the regression test for the read-to-record window): this
     many requests needing a reply are read, then the process kills itself
     before recording the last one. */
  const char *k = getenv("ESTARGZ_FUSE_TEST_KILL_AFTER_READS");
  s->test_kill_after = k ? strtol(k, NULL, 10) : 0;
  return NULL;
}

/* journalUsed(): requests read and not yet answered */
static napi_value session_journal_used(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  session_t *s = unwrap(env, info, &argc, NULL);
  if (!s) return NULL;
  napi_value v;
  napi_create_uint32(env, s->jused, &v);
  return v;
}

/*
 * adoptJournal(fd, from, extras) -> { count, next }: takes over the live
 * entries of another process's journal (a dead predecessor's), from slot
 * `from` on: each is recorded in this session's journal (so it survives this
 * process dying too) and decoded into request rows 0..count-1 and `extras`,
 * exactly as freshly read requests, for JS to answer. Entries this journal
 * already holds (the same unique adopted twice) are skipped. `next` is the
 * slot to continue from, or -1 when the journal is done. If this journal is
 * full, the rest are answered EIO here. After the slots (as slot number
 * `slots`) comes the request left in the journal's read buffer, if any: one
 * the dead process had read but maybe not recorded (killed in between); if
 * it had, the unique is already taken from its slot and it is skipped.
 */
static napi_value session_adopt_journal(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  session_t *s = unwrap(env, info, &argc, argv);
  if (!s) return NULL;
  if (!s->jmap) { napi_throw_error(env, NULL, "setJournal first"); return NULL; }
  size_t len; uint32_t slots;
  uint8_t *m = j_map((int)num(env, argv[0]), &len, &slots);
  if (!m) return throw_errno(env, "journal", errno);
  int64_t i = (int64_t)num(env, argv[1]);
  int count = 0;
  for (; i >= 0 && i <= slots && count < MAX_BATCH; i++) {
    if (i == slots) {
      const struct fuse_in_header *h = j_readbuf(m, len);
      uint32_t blen = j_staged_len(h);
      if (!blen || !needs_reply(h->opcode) || j_find(s, h->unique) >= 0) continue;
      if (s->jused >= s->jslots) {
        struct fuse_out_header oh = { sizeof oh, -EIO, h->unique };
        while (write(s->fd, &oh, sizeof oh) < 0 && errno == EINTR) {}
        continue;
      }
      /* Decoded (and recorded in this journal) as if this process had read it. */
      if (decode(s, (const uint8_t *)h, count, blen, argv[2])) { count++; s->inflight++; }
      continue;
    }
    jslot_t *e = jslot(m, (uint32_t)i);
    if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) != J_LIVE) continue;
    if (j_find(s, e->unique) >= 0) continue;
    if (s->jused >= s->jslots) {
      struct fuse_out_header oh = { sizeof oh, -EIO, e->unique };
      while (write(s->fd, &oh, sizeof oh) < 0 && errno == EINTR) {}
      continue;
    }
    uint32_t nl = e->name_len > J_NAME_MAX ? J_NAME_MAX : e->name_len;
    j_record(s, e->unique, e->row, e->name, nl);
    memcpy(s->reqs + (size_t)count * REQ_STRIDE, e->row, sizeof e->row);
    if (nl) napi_set_element(env, argv[2], count, str_n(env, e->name, nl));
    count++;
    s->inflight++; /* its reply goes out through send_reply like any other */
  }
  munmap(m, len);
  napi_value out, c, nx;
  napi_create_object(env, &out);
  napi_create_int32(env, count, &c);
  napi_create_int64(env, i > slots ? -1 : i, &nx);
  napi_set_named_property(env, out, "count", c);
  napi_set_named_property(env, out, "next", nx);
  return out;
}

/* ------------------------------------------------------------------------ */
/* Replies: each returns 0, or the errno of the write (ENOENT: the request  */
/* was interrupted and is gone; the kernel took nothing from the reply).    */

static napi_value send_reply(napi_env env, session_t *s, uint64_t unique, int error, struct iovec *iov, int iovcnt) {
  struct fuse_out_header oh;
  size_t len = sizeof oh;
  for (int i = 1; i < iovcnt; i++) len += iov[i].iov_len;
  oh.len = (uint32_t)len;
  oh.error = -error;
  oh.unique = unique;
  iov[0].iov_base = &oh;
  iov[0].iov_len = sizeof oh;
  int rc = 0;
  while (writev(s->fd, iov, iovcnt) < 0) {
    if (errno == EINTR) continue;
    rc = errno;
    break;
  }
  if (rc == ENOENT) s->refused++;
  s->last_replied = unique;
  /* After the write, never before: a process dying in between leaves the
     entry, and the successor's second answer is merely refused (ENOENT). */
  j_clear(s, unique);
  /* (a reply JS sends for a request it was never given is refused by the
     kernel; the count does not go below 0 for it) */
  if (s->inflight > 0) s->inflight--;
  napi_value v;
  napi_create_int32(env, rc, &v);
  return v;
}

#define REPLY_PROLOGUE(nargs)                                  \
  size_t argc = nargs;                                         \
  napi_value argv[nargs > 0 ? nargs : 1];                      \
  session_t *s = unwrap(env, info, &argc, argv);               \
  if (!s) return NULL;                                         \
  uint64_t unique = (uint64_t)num(env, argv[0]);

/* replyError(unique, errno) */
static napi_value reply_error(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  struct iovec iov[1];
  return send_reply(env, s, unique, (int)num(env, argv[1]), iov, 1);
}

/* replyEntry(unique): the entry in scratch row 0 */
static napi_value reply_entry(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(1);
  struct fuse_entry_out e;
  fill_entry(&e, s->scratch);
  struct iovec iov[2] = {{0}, {&e, sizeof e}};
  return send_reply(env, s, unique, 0, iov, 2);
}

/* replyAttr(unique): attr_valid and the attr of scratch row 0 */
static napi_value reply_attr(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(1);
  struct fuse_attr_out a;
  memset(&a, 0, sizeof a);
  uint64_t sec; uint32_t ns;
  split_time(s->scratch[3], &sec, &ns);
  a.attr_valid = sec; a.attr_valid_nsec = ns;
  fill_attr(&a.attr, s->scratch + ATTR_AT);
  struct iovec iov[2] = {{0}, {&a, sizeof a}};
  return send_reply(env, s, unique, 0, iov, 2);
}

/* replyData(unique, buffer?, offset, length): the bytes straight from the Buffer, no copy */
static napi_value reply_data(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(4);
  void *data = NULL;
  size_t blen = 0;
  struct iovec iov[2] = {{0}, {0}};
  int n = 1;
  if (argc >= 2) {
    napi_valuetype t;
    napi_typeof(env, argv[1], &t);
    if (t == napi_object && napi_get_buffer_info(env, argv[1], &data, &blen) == napi_ok) {
      size_t off = argc >= 3 ? (size_t)num(env, argv[2]) : 0;
      size_t len = argc >= 4 ? (size_t)num(env, argv[3]) : blen;
      if (off > blen) off = blen;
      if (len > blen - off) len = blen - off;
      iov[1].iov_base = (uint8_t *)data + off;
      iov[1].iov_len = len;
      n = 2;
    }
  }
  return send_reply(env, s, unique, 0, iov, n);
}

/* Most buffers one replyDataVec takes: a 1 MiB read of 4 KiB chunks. More
   (smaller chunks) is for JS to join first; the stack array stays small. */
#define MAX_REPLY_PARTS 256

/* replyDataVec(unique, buffers): the bytes of each Buffer in order, one
   writev, no copy (a read spanning several verified chunks). An element that
   is not a Buffer, or too many of them, answers EIO: a request is never left
   unanswered. */
static napi_value reply_data_vec(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  struct iovec iov[1 + MAX_REPLY_PARTS];
  uint32_t n = 0;
  bool ok = argc >= 2 && napi_get_array_length(env, argv[1], &n) == napi_ok && n <= MAX_REPLY_PARTS;
  for (uint32_t i = 0; ok && i < n; i++) {
    napi_value el;
    void *data = NULL;
    size_t len = 0;
    ok = napi_get_element(env, argv[1], i, &el) == napi_ok && napi_get_buffer_info(env, el, &data, &len) == napi_ok;
    iov[1 + i].iov_base = data;
    iov[1 + i].iov_len = len;
  }
  if (!ok) return send_reply(env, s, unique, EIO, iov, 1);
  return send_reply(env, s, unique, 0, iov, 1 + (int)n);
}

/* replyOpen(unique, fh, openFlags) */
static napi_value reply_open(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3);
  struct fuse_open_out o;
  memset(&o, 0, sizeof o);
  o.fh = (uint64_t)num(env, argv[1]);
  o.open_flags = (uint32_t)num(env, argv[2]);
  struct iovec iov[2] = {{0}, {&o, sizeof o}};
  return send_reply(env, s, unique, 0, iov, 2);
}

/* replyXattrSize(unique, size): the answer to a size-0 getxattr/listxattr */
static napi_value reply_xattr_size(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2);
  struct fuse_getxattr_out o;
  memset(&o, 0, sizeof o);
  o.size = (uint32_t)num(env, argv[1]);
  struct iovec iov[2] = {{0}, {&o, sizeof o}};
  return send_reply(env, s, unique, 0, iov, 2);
}

/* replyStatfs(unique, blocks, bfree, bavail, files, ffree, bsize, namelen, frsize) */
static napi_value reply_statfs(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(9);
  struct fuse_statfs_out o;
  memset(&o, 0, sizeof o);
  o.st.blocks = (uint64_t)num(env, argv[1]);
  o.st.bfree = (uint64_t)num(env, argv[2]);
  o.st.bavail = (uint64_t)num(env, argv[3]);
  o.st.files = (uint64_t)num(env, argv[4]);
  o.st.ffree = (uint64_t)num(env, argv[5]);
  o.st.bsize = (uint32_t)num(env, argv[6]);
  o.st.namelen = (uint32_t)num(env, argv[7]);
  o.st.frsize = (uint32_t)num(env, argv[8]);
  struct iovec iov[2] = {{0}, {&o, sizeof o}};
  return send_reply(env, s, unique, 0, iov, 2);
}

/* replyInit(unique, major, minor, maxReadahead, flags, flags2, maxBackground, congestionThreshold, maxWrite, timeGran, maxPages) */
static napi_value reply_init(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(11);
  struct fuse_init_out o;
  memset(&o, 0, sizeof o);
  o.major = (uint32_t)num(env, argv[1]);
  o.minor = (uint32_t)num(env, argv[2]);
  o.max_readahead = (uint32_t)num(env, argv[3]);
  o.flags = (uint32_t)num(env, argv[4]);
  o.flags2 = (uint32_t)num(env, argv[5]);
  o.max_background = (uint16_t)num(env, argv[6]);
  o.congestion_threshold = (uint16_t)num(env, argv[7]);
  o.max_write = (uint32_t)num(env, argv[8]);
  o.time_gran = (uint32_t)num(env, argv[9]);
  o.max_pages = (uint16_t)num(env, argv[10]);
  struct iovec iov[2] = {{0}, {&o, sizeof o}};
  return send_reply(env, s, unique, 0, iov, 2);
}

/*
 * replyDir(unique, plus, size, count, names): packs scratch rows 0..count-1
 * (with names[i]) as fuse_dirent or fuse_direntplus records until `size`
 * bytes are full. Returns the number of entries sent (the kernel takes a
 * lookup reference for each READDIRPLUS entry other than . and ..), or
 * -errno if the write failed.
 */
static napi_value reply_dir(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(5);
  bool plus = false;
  napi_get_value_bool(env, argv[1], &plus);
  size_t size = (size_t)num(env, argv[2]);
  size_t count = (size_t)num(env, argv[3]);
  if (size > OUT_BUF_SIZE) size = OUT_BUF_SIZE;
  if (count > s->scratch_len / ENTRY_STRIDE) count = s->scratch_len / ENTRY_STRIDE;
  size_t used = 0, i;
  char name[1024];
  for (i = 0; i < count; i++) {
    napi_value nv;
    size_t nlen = 0;
    napi_get_element(env, argv[4], (uint32_t)i, &nv);
    if (napi_get_value_string_utf8(env, nv, name, sizeof name, &nlen) != napi_ok || nlen == 0) break;
    const double *d = s->scratch + i * ENTRY_STRIDE;
    size_t dsize = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + nlen);
    size_t need = (plus ? sizeof(struct fuse_entry_out) : 0) + dsize;
    if (used + need > size) break;
    uint8_t *p = s->outbuf + used;
    memset(p, 0, need);
    struct fuse_dirent *de;
    if (plus) {
      struct fuse_direntplus *dp = (struct fuse_direntplus *)p;
      fill_entry(&dp->entry_out, d);
      de = &dp->dirent;
    } else {
      de = (struct fuse_dirent *)p;
    }
    de->ino = (uint64_t)d[ATTR_AT + 0];
    de->off = (uint64_t)d[16];
    de->namelen = (uint32_t)nlen;
    de->type = ((uint32_t)d[ATTR_AT + 6] >> 12) & 017;
    memcpy(de->name, name, nlen);
    used += need;
  }
  struct iovec iov[2] = {{0}, {s->outbuf, used}};
  napi_value rc = send_reply(env, s, unique, 0, iov, 2);
  int32_t err = 0;
  napi_get_value_int32(env, rc, &err);
  napi_value out;
  napi_create_int32(env, err ? -err : (int32_t)i, &out);
  return out;
}

/* ------------------------------------------------------------------------ */
/* Device and mount                                                          */

/* openDevice(): a new FUSE connection (close-on-exec; handing it to a successor dup2s it) */
static napi_value open_device(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open /dev/fuse", errno);
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

static char *get_str(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *p = malloc(len + 1);
  napi_get_value_string_utf8(env, v, p, len + 1, &len);
  return p;
}

/* mount(source, target, fstype, flags, data): mount(2); throws with .errno */
static napi_value do_mount(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *src = get_str(env, argv[0]), *tgt = get_str(env, argv[1]), *type = get_str(env, argv[2]), *data = get_str(env, argv[4]);
  unsigned long flags = (unsigned long)num(env, argv[3]);
  int rc = (src && tgt && type && data) ? mount(src, tgt, type, flags, data) : (errno = EINVAL, -1);
  int err = errno;
  free(src); free(tgt); free(type); free(data);
  if (rc < 0) return throw_errno(env, "mount(2)", err);
  return NULL;
}

/* createJournal(slots): a new, empty journal (a memfd: no name in any
   filesystem, gone with its last holder) of `slots` rounded up to a power of
   two, with a read buffer (J_F_READBUF); close-on-exec (a child gets it
   through spawn's stdio). */
static napi_value create_journal(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double want = argc > 0 ? num(env, argv[0]) : 1024;
  uint32_t slots = 16;
  while (slots < want && slots < (1u << 20)) slots <<= 1;
  int fd = memfd_create("fuse-journal", MFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  jheader_t h;
  memset(&h, 0, sizeof h);
  h.magic = J_MAGIC; h.version = J_VERSION; h.slots = slots; h.slot_size = J_SLOT_SIZE; h.flags = J_F_READBUF;
  if (ftruncate(fd, (off_t)j_size(slots)) < 0 || pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
    int err = errno;
    close(fd);
    return throw_errno(env, "journal", err);
  }
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

/* journalLive(fd): how many entries of a journal are live (for status and tests) */
static napi_value journal_live(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t len; uint32_t slots;
  uint8_t *m = j_map((int)num(env, argv[0]), &len, &slots);
  if (!m) return throw_errno(env, "journal", errno);
  uint32_t live = 0;
  for (uint32_t i = 0; i < slots; i++) if (jslot(m, i)->state == J_LIVE) live++;
  /* A request read into the buffer and in no slot is in flight too (a
     journal holding only that is still an orphan to adopt). The server
     reads only while a slot is free, so with every slot live the buffer
     holds an entry already answered; and a scan racing the server (a slot
     freed and another taken while it runs) may see one entry twice: a
     journal never holds more than its slots. */
  const struct fuse_in_header *h = j_readbuf(m, len);
  if (live < slots && j_staged_len(h) && needs_reply(h->opcode) && j_lookup(m, slots, h->unique) < 0) live++;
  if (live > slots) live = slots;
  munmap(m, len);
  napi_value v;
  napi_create_uint32(env, live, &v);
  return v;
}

/* umount(target, flags): returns 0 or errno */
static napi_value do_umount(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *tgt = get_str(env, argv[0]);
  int rc = tgt ? umount2(tgt, (int)num(env, argv[1])) : (errno = EINVAL, -1);
  int err = rc < 0 ? errno : 0;
  free(tgt);
  napi_value v;
  napi_create_int32(env, err, &v);
  return v;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
    {"start", NULL, session_start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, session_stop, NULL, NULL, NULL, napi_default, NULL},
    {"replyError", NULL, reply_error, NULL, NULL, NULL, napi_default, NULL},
    {"replyEntry", NULL, reply_entry, NULL, NULL, NULL, napi_default, NULL},
    {"replyAttr", NULL, reply_attr, NULL, NULL, NULL, napi_default, NULL},
    {"replyData", NULL, reply_data, NULL, NULL, NULL, napi_default, NULL},
    {"replyDataVec", NULL, reply_data_vec, NULL, NULL, NULL, napi_default, NULL},
    {"replyOpen", NULL, reply_open, NULL, NULL, NULL, napi_default, NULL},
    {"replyXattrSize", NULL, reply_xattr_size, NULL, NULL, NULL, napi_default, NULL},
    {"replyStatfs", NULL, reply_statfs, NULL, NULL, NULL, napi_default, NULL},
    {"replyInit", NULL, reply_init, NULL, NULL, NULL, napi_default, NULL},
    {"replyDir", NULL, reply_dir, NULL, NULL, NULL, napi_default, NULL},
    {"setJournal", NULL, session_set_journal, NULL, NULL, NULL, napi_default, NULL},
    {"journalUsed", NULL, session_journal_used, NULL, NULL, NULL, napi_default, NULL},
    {"adoptJournal", NULL, session_adopt_journal, NULL, NULL, NULL, napi_default, NULL},
    {"setBusyPoll", NULL, session_set_busy_poll, NULL, NULL, NULL, napi_default, NULL},
    {"busyPollScore", NULL, session_number, NULL, NULL, NULL, napi_default, (void *)(intptr_t)NUM_BUSY_POLL_SCORE},
    {"lastReplied", NULL, session_number, NULL, NULL, NULL, napi_default, (void *)(intptr_t)NUM_LAST_REPLIED},
    {"refusedReplies", NULL, session_number, NULL, NULL, NULL, napi_default, (void *)(intptr_t)NUM_REFUSED_REPLIES},
  };
  napi_value cls;
  napi_define_class(env, "Session", NAPI_AUTO_LENGTH, session_new, NULL, sizeof methods / sizeof methods[0], methods, &cls);
  napi_property_descriptor fns[] = {
    {"Session", NULL, NULL, NULL, NULL, cls, napi_default, NULL},
    {"openDevice", NULL, open_device, NULL, NULL, NULL, napi_default, NULL},
    {"mount", NULL, do_mount, NULL, NULL, NULL, napi_default, NULL},
    {"umount", NULL, do_umount, NULL, NULL, NULL, napi_default, NULL},
    {"createJournal", NULL, create_journal, NULL, NULL, NULL, napi_default, NULL},
    {"journalLive", NULL, journal_live, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
