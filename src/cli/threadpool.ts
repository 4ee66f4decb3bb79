// Imported first by the CLI: libuv sizes its thread pool on first use, and the default of 4 is
// shared by file I/O, DNS and password hashing. Blob streaming wants more.
process.env.UV_THREADPOOL_SIZE ??= '16';
