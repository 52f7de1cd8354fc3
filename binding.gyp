{
  "targets": [
    {
      "target_name": "fuse_binding",
      "sources": ["native/fuse_binding.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
