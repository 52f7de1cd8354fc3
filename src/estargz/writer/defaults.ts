// Defaults of the converter, in a module of their own so that command-line
// parsing can show them without loading the converter.
export const DEFAULT_CHUNK_SIZE = 4 << 20;
export const DEFAULT_COMPRESSION_LEVEL = 9;
