/*
 * Archives: named values (tensors, numbers, integers, strings, booleans, table markers)
 * saved to and loaded from one binary file format (docs/format.md): a magic, a format
 * version, the entries, and a CRC-32 of everything before it.
 *
 * ms_archive_save writes a temporary file in the target's directory, fsyncs it, renames it
 * over the target and fsyncs the directory, so a reader (or a run killed at any instant)
 * sees either the old complete file or the new complete file, never a partial one.
 * ms_archive_load reads and validates the whole file (magic, version, every size against the
 * file's length, shape overflow, names, duplicates, checksum) before handing out anything; a
 * truncated or corrupted file fails with MS_EARG and a message naming the path and what is
 * wrong ("ms_archive_load: 'run.ckpt': checksum mismatch (stored 0x1234abcd, computed
 * 0x9876fedc): the file is corrupted"), *out left NULL.
 *
 * Names are NUL-terminated strings (any bytes but NUL, at most MS_ARCHIVE_MAXNAME bytes,
 * "" allowed) and unique within an archive. Nested tables are written as path names
 * ("theta/1", "history/3/value"); a MS_ARCHIVE_TABLE entry marks a table that must exist
 * even when empty. The engine gives names no further meaning; the Lua binding's encoding of
 * table keys is in docs/format.md.
 *
 * Ownership: put_* copy what they are given (a tensor's values are copied at the call, so a
 * later in-place write to it does not change the archive). get_tensor returns a NEW
 * REFERENCE to a fresh contiguous copy; get_string borrows the archive's bytes (valid until
 * ms_archive_free). Errors are recorded in the archive's context.
 */
#ifndef METASTEP_ARCHIVE_H
#define METASTEP_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "metastep/ctx.h"
#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_ARCHIVE_VERSION 1
#define MS_ARCHIVE_MAXNAME 4096

typedef enum ms_archive_kind {
  MS_ARCHIVE_NONE = 0, /* no such entry (ms_archive_find) */
  MS_ARCHIVE_TENSOR = 1,
  MS_ARCHIVE_NUMBER = 2,  /* double, bits kept exactly (NaN payloads, -0.0) */
  MS_ARCHIVE_INTEGER = 3, /* int64_t */
  MS_ARCHIVE_STRING = 4,  /* bytes (may contain NUL) */
  MS_ARCHIVE_BOOLEAN = 5,
  MS_ARCHIVE_TABLE = 6 /* no value: marks a (possibly empty) table */
} ms_archive_kind;

typedef struct ms_archive ms_archive;

/* A new empty archive in ctx. */
int ms_archive_new(ms_ctx *ctx, ms_archive **out);
/* Frees the archive and everything in it (NULL is ignored). */
void ms_archive_free(ms_archive *a);
ms_ctx *ms_archive_ctx(const ms_archive *a);

/* Adds an entry. MS_EARG for a NULL or too long name, or a name already in the archive. */
int ms_archive_put_tensor(ms_archive *a, const char *name, const ms_tensor *t);
int ms_archive_put_number(ms_archive *a, const char *name, double value);
int ms_archive_put_integer(ms_archive *a, const char *name, int64_t value);
int ms_archive_put_string(ms_archive *a, const char *name, const char *s);
int ms_archive_put_lstring(ms_archive *a, const char *name, const char *s, size_t len);
int ms_archive_put_boolean(ms_archive *a, const char *name, int value);
int ms_archive_put_table(ms_archive *a, const char *name);

/* Writes the archive to path atomically (temporary file, fsync, rename). On failure the file
 * at path is unchanged and no temporary file is left. */
int ms_archive_save(ms_archive *a, const char *path);
/* Reads and validates path; *out is a new archive, or NULL on failure (MS_EARG for a file
 * that is not a valid archive, MS_ESTATE for one that cannot be opened or read). */
int ms_archive_load(ms_ctx *ctx, const char *path, ms_archive **out);

/* Iteration in insertion (file) order: entries 0..count-1. ms_archive_entry sets *name
 * (borrowed) and *kind for entry i; MS_EINDEX when i is out of range. */
int64_t ms_archive_count(const ms_archive *a);
int ms_archive_entry(const ms_archive *a, int64_t i, const char **name, ms_archive_kind *kind);
/* The kind of the entry named name, MS_ARCHIVE_NONE when there is none (never fails). */
ms_archive_kind ms_archive_find(const ms_archive *a, const char *name);

/* Reads an entry. MS_EINDEX "ms_archive_get_number: no entry 'lr'" when absent, MS_EARG
 * "ms_archive_get_number: entry 'lr' is a tensor, not a number" for the wrong kind. */
int ms_archive_get_tensor(const ms_archive *a, const char *name, ms_tensor **out);
int ms_archive_get_number(const ms_archive *a, const char *name, double *out);
int ms_archive_get_integer(const ms_archive *a, const char *name, int64_t *out);
/* *s: the bytes, NUL-terminated (borrowed); *len (may be NULL): their count. */
int ms_archive_get_string(const ms_archive *a, const char *name, const char **s, size_t *len);
int ms_archive_get_boolean(const ms_archive *a, const char *name, int *out);

#ifdef __cplusplus
}
#endif
#endif
