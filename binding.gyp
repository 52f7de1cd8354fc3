{
  "targets": [
    {
      "target_name": "fuse_binding",
      "sources": ["native/fuse_binding.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "zstd_decode",
      "sources": ["native/zstd_decode.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lzstd"]
    }
  ]
}
