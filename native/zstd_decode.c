/*
 * zstd decoding for the decode workers, through the system's libzstd
 * (Debian: libzstd-dev to build, libzstd1 at run time). Node 20's zlib has no
 * zstd, and libzstd decodes several times faster than the JS and WASM
 * packages (see src/zstdchunked/README.md for the measurements).
 *
 * Two entry points, both bounded by the caller so that a hostile frame cannot
 * expand past what the index allows:
 *
 *   decompress(src, size) -> Buffer
 *     Decodes every frame of `src` into a new buffer of exactly `size` bytes.
 *     Throws when the frames hold more than `size` bytes (the decoder stops at
 *     the bound: it never writes past it), fewer, or are damaged.
 *
 *   new Stream() ; stream.decode(src, srcOffset, outCapacity) -> [consumed, Buffer, frameEnded]
 *     Streaming decode for inputs whose output is too large to hold at once
 *     (the tar-split). Decodes from src[srcOffset..] until `outCapacity` bytes
 *     are out or the input is used up; the caller loops.
 *
 * Each thread (the main one and every worker) loads its own instance; the
 * one-shot decompression context lives in the instance data, never shared.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#define CHECK(call)                                                        \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      napi_throw_error(env, NULL, "zstd_decode: N-API call failed: " #call); \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

typedef struct {
  ZSTD_DCtx *dctx;
} instance_t;

static void free_instance(napi_env env, void *data, void *hint) {
  instance_t *inst = data;
  if (inst) {
    ZSTD_freeDCtx(inst->dctx);
    free(inst);
  }
}

static napi_value throw_msg(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

/* Reads a Uint8Array / Buffer argument. */
static int get_bytes(napi_env env, napi_value v, const uint8_t **data, size_t *len) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return 0;
  napi_typedarray_type type;
  void *ptr;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, &ab, &off) != napi_ok) return 0;
  if (type != napi_uint8_array) return 0;
  *data = ptr;
  return 1;
}

static int get_size(napi_env env, napi_value v, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  if (!(d >= 0) || d > 9007199254740991.0 || d != (double)(uint64_t)d) return 0;
  *out = (size_t)d;
  return 1;
}

static napi_value Decompress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  const uint8_t *src;
  size_t src_len, size;
  if (argc < 2 || !get_bytes(env, argv[0], &src, &src_len) || !get_size(env, argv[1], &size)) {
    return throw_msg(env, "ERR_INVALID_ARG", "decompress(src: Uint8Array, size: number)");
  }
  instance_t *inst;
  CHECK(napi_get_instance_data(env, (void **)&inst));
  napi_value out;
  void *dst;
  /* One byte more than wanted: a frame that holds more than `size` is seen as such, not as a fit. */
  CHECK(napi_create_buffer(env, size + 1, &dst, &out));
  size_t got = ZSTD_decompressDCtx(inst->dctx, dst, size + 1, src, src_len);
  if (ZSTD_isError(got)) {
    if (ZSTD_getErrorCode(got) == ZSTD_error_dstSize_tooSmall) {
      return throw_msg(env, "ZSTD_TOO_LARGE", "the frames decode to more bytes than expected");
    }
    return throw_msg(env, "ZSTD_CORRUPT", ZSTD_getErrorName(got));
  }
  if (got != size) {
    char msg[128];
    snprintf(msg, sizeof msg, "the frames decode to %zu bytes, expected %zu", got, size);
    return throw_msg(env, got > size ? "ZSTD_TOO_LARGE" : "ZSTD_TOO_SHORT", msg);
  }
  /* A view of exactly `size` bytes over the buffer. */
  napi_value ab, view;
  size_t ab_off;
  napi_typedarray_type type;
  size_t len;
  void *p;
  CHECK(napi_get_typedarray_info(env, out, &type, &len, &p, &ab, &ab_off));
  CHECK(napi_create_typedarray(env, napi_uint8_array, size, ab, ab_off, &view));
  return view;
}

static void free_stream(napi_env env, void *data, void *hint) {
  ZSTD_freeDStream((ZSTD_DStream *)data);
}

static napi_value StreamNew(napi_env env, napi_callback_info info) {
  napi_value self;
  CHECK(napi_get_cb_info(env, info, NULL, NULL, &self, NULL));
  ZSTD_DStream *ds = ZSTD_createDStream();
  if (!ds) return throw_msg(env, "ZSTD_NOMEM", "cannot allocate a zstd stream");
  ZSTD_initDStream(ds);
  if (napi_wrap(env, self, ds, free_stream, NULL, NULL) != napi_ok) {
    ZSTD_freeDStream(ds);
    return throw_msg(env, NULL, "zstd_decode: napi_wrap failed");
  }
  return self;
}

static napi_value StreamDecode(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], self;
  CHECK(napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  ZSTD_DStream *ds;
  CHECK(napi_unwrap(env, self, (void **)&ds));
  const uint8_t *src;
  size_t src_len, src_off, cap;
  if (argc < 3 || !get_bytes(env, argv[0], &src, &src_len) || !get_size(env, argv[1], &src_off) ||
      !get_size(env, argv[2], &cap) || src_off > src_len || cap == 0) {
    return throw_msg(env, "ERR_INVALID_ARG", "decode(src: Uint8Array, srcOffset: number, outCapacity: number > 0)");
  }
  void *dst;
  napi_value out;
  CHECK(napi_create_buffer(env, cap, &dst, &out));
  ZSTD_inBuffer in = {src, src_len, src_off};
  ZSTD_outBuffer ob = {dst, cap, 0};
  int frame_ended = 0;
  while (in.pos < in.size && ob.pos < ob.size) {
    size_t r = ZSTD_decompressStream(ds, &ob, &in);
    if (ZSTD_isError(r)) return throw_msg(env, "ZSTD_CORRUPT", ZSTD_getErrorName(r));
    frame_ended = r == 0;
  }
  /* Output still buffered inside the decoder once the input is used up. */
  if (in.pos == in.size && ob.pos < ob.size && !frame_ended) {
    size_t r = ZSTD_decompressStream(ds, &ob, &in);
    if (ZSTD_isError(r)) return throw_msg(env, "ZSTD_CORRUPT", ZSTD_getErrorName(r));
    frame_ended = r == 0;
  }
  napi_value result, consumed, view, ended, ab;
  size_t ab_off, len;
  napi_typedarray_type type;
  void *p;
  CHECK(napi_get_typedarray_info(env, out, &type, &len, &p, &ab, &ab_off));
  CHECK(napi_create_typedarray(env, napi_uint8_array, ob.pos, ab, ab_off, &view));
  CHECK(napi_create_double(env, (double)(in.pos - src_off), &consumed));
  CHECK(napi_get_boolean(env, frame_ended, &ended));
  CHECK(napi_create_array_with_length(env, 3, &result));
  CHECK(napi_set_element(env, result, 0, consumed));
  CHECK(napi_set_element(env, result, 1, view));
  CHECK(napi_set_element(env, result, 2, ended));
  return result;
}

NAPI_MODULE_INIT() {
  instance_t *inst = calloc(1, sizeof *inst);
  if (!inst) return NULL;
  inst->dctx = ZSTD_createDCtx();
  if (!inst->dctx || napi_set_instance_data(env, inst, free_instance, NULL) != napi_ok) {
    free_instance(env, inst, NULL);
    return NULL;
  }
  napi_value fn, cls, version;
  CHECK(napi_create_function(env, "decompress", NAPI_AUTO_LENGTH, Decompress, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "decompress", fn));
  napi_property_descriptor methods[] = {
      {"decode", NULL, StreamDecode, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_class(env, "Stream", NAPI_AUTO_LENGTH, StreamNew, NULL, 1, methods, &cls));
  CHECK(napi_set_named_property(env, exports, "Stream", cls));
  CHECK(napi_create_string_utf8(env, ZSTD_versionString(), NAPI_AUTO_LENGTH, &version));
  CHECK(napi_set_named_property(env, exports, "libzstdVersion", version));
  return exports;
}
