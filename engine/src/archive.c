/*
 * Archives (archive.h): named values in one binary file format, docs/format.md.
 *
 * Saving streams the entries into a temporary file beside the target (same directory, so
 * rename is atomic), computing the CRC-32 on the way, fsyncs it and renames it over the
 * target. Loading reads the whole file into one buffer and validates all of it before the
 * archive is handed out, so a bad file never yields a half-read archive.
 */
#define _POSIX_C_SOURCE 200809L

#include "metastep/archive.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const unsigned char MAGIC[8] = {0x89, 'M', 'S', 'A', 'R', 'C', '\r', '\n'};
#define HEADER_SIZE 32
#define TRAILER_SIZE 4
#define DTYPE_F64 1

typedef struct entry {
  char *name;
  size_t namelen;
  ms_archive_kind kind;
  double num;
  int64_t integer;
  int boolean;
  char *str; /* len + 1 bytes, NUL-terminated */
  size_t len;
  ms_tensor *t; /* contiguous, owned */
} entry;

struct ms_archive {
  ms_ctx *ctx;
  entry *e;
  int64_t n, cap;
  int64_t *slots; /* open addressing: entry index + 1, 0 = empty */
  size_t nslots;  /* a power of two, at least 2 n */
};

/* ---- CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, as zlib's crc32) ---- */

typedef struct crc32_state {
  uint32_t table[256];
  uint32_t crc;
} crc32_state;

static void crc_init(crc32_state *c) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t r = i;
    for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1u)));
    c->table[i] = r;
  }
  c->crc = 0xFFFFFFFFu;
}

static void crc_update(crc32_state *c, const unsigned char *p, size_t n) {
  uint32_t r = c->crc;
  for (size_t i = 0; i < n; i++) r = c->table[(r ^ p[i]) & 0xFFu] ^ (r >> 8);
  c->crc = r;
}

static uint32_t crc_final(const crc32_state *c) { return c->crc ^ 0xFFFFFFFFu; }

/* ---- little-endian encoding ---- */

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t dbits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}
static double bitsd(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* ---- the in-memory archive ---- */

int ms_archive_new(ms_ctx *ctx, ms_archive **out) {
  *out = NULL;
  ms_archive *a = ms_ctx_alloc(ctx, sizeof *a);
  if (a == NULL) return MS_ENOMEM;
  memset(a, 0, sizeof *a);
  a->ctx = ctx;
  *out = a;
  return MS_OK;
}

ms_ctx *ms_archive_ctx(const ms_archive *a) { return a->ctx; }

static void entry_clear(ms_ctx *ctx, entry *e) {
  ms_ctx_dealloc(ctx, e->name, e->namelen + 1);
  if (e->str) ms_ctx_dealloc(ctx, e->str, e->len + 1);
  ms_tensor_release(e->t);
  memset(e, 0, sizeof *e);
}

void ms_archive_free(ms_archive *a) {
  if (a == NULL) return;
  ms_ctx *ctx = a->ctx;
  for (int64_t i = 0; i < a->n; i++) entry_clear(ctx, &a->e[i]);
  if (a->e) ms_ctx_dealloc(ctx, a->e, (size_t)a->cap * sizeof(entry));
  if (a->slots) ms_ctx_dealloc(ctx, a->slots, a->nslots * sizeof(int64_t));
  ms_ctx_dealloc(ctx, a, sizeof *a);
}

static uint64_t name_hash(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
  return h;
}

/* Slot of name: the one holding it, or the empty one where it would go. */
static size_t slot_of(const ms_archive *a, const char *name, size_t n) {
  size_t mask = a->nslots - 1, i = (size_t)name_hash(name, n) & mask;
  while (a->slots[i]) {
    const entry *e = &a->e[a->slots[i] - 1];
    if (e->namelen == n && memcmp(e->name, name, n) == 0) return i;
    i = (i + 1) & mask;
  }
  return i;
}

static const entry *lookup(const ms_archive *a, const char *name) {
  if (a->nslots == 0 || name == NULL) return NULL;
  size_t i = slot_of(a, name, strlen(name));
  return a->slots[i] ? &a->e[a->slots[i] - 1] : NULL;
}

/* Makes room for one more entry and its slot. */
static int reserve(ms_archive *a) {
  if (a->n == a->cap) {
    int64_t cap = a->cap ? 2 * a->cap : 16;
    entry *e =
        ms__ctx_realloc(a->ctx, a->e, (size_t)a->cap * sizeof(entry), (size_t)cap * sizeof(entry));
    if (e == NULL) return MS_ENOMEM;
    memset(e + a->cap, 0, (size_t)(cap - a->cap) * sizeof(entry));
    a->e = e;
    a->cap = cap;
  }
  if ((size_t)(a->n + 1) * 2 > a->nslots) {
    size_t ns = a->nslots ? 2 * a->nslots : 32;
    int64_t *slots = ms_ctx_alloc(a->ctx, ns * sizeof(int64_t));
    if (slots == NULL) return MS_ENOMEM;
    memset(slots, 0, ns * sizeof(int64_t));
    if (a->slots) ms_ctx_dealloc(a->ctx, a->slots, a->nslots * sizeof(int64_t));
    a->slots = slots;
    a->nslots = ns;
    for (int64_t k = 0; k < a->n; k++) a->slots[slot_of(a, a->e[k].name, a->e[k].namelen)] = k + 1;
  }
  return MS_OK;
}

/* Appends an entry named name of the given kind; *out points at it (its value unset). On
 * failure nothing is added. */
static int add(ms_archive *a, const char *fn, const char *name, ms_archive_kind kind, entry **out) {
  if (name == NULL) return ms_ctx_fail(a->ctx, MS_EARG, "%s: name is NULL", fn);
  size_t n = strlen(name);
  if (n > MS_ARCHIVE_MAXNAME)
    return ms_ctx_fail(a->ctx, MS_EARG, "%s: name of %zu bytes is longer than %d", fn, n,
                       MS_ARCHIVE_MAXNAME);
  int st = reserve(a);
  if (st) return st;
  size_t slot = slot_of(a, name, n);
  if (a->slots[slot])
    return ms_ctx_fail(a->ctx, MS_EARG, "%s: the archive already has an entry '%s'", fn, name);
  char *copy = ms_ctx_alloc(a->ctx, n + 1);
  if (copy == NULL) return MS_ENOMEM;
  memcpy(copy, name, n + 1);
  entry *e = &a->e[a->n];
  memset(e, 0, sizeof *e);
  e->name = copy;
  e->namelen = n;
  e->kind = kind;
  a->slots[slot] = ++a->n;
  *out = e;
  return MS_OK;
}

/* Drops the last entry (after a failure filling it). */
static void drop_last(ms_archive *a) {
  entry *e = &a->e[a->n - 1];
  size_t mask = a->nslots - 1, hole = slot_of(a, e->name, e->namelen), i = (hole + 1) & mask;
  a->slots[hole] = 0;
  /* Reinsert the slots after the hole so linear probing still finds them. */
  entry_clear(a->ctx, e);
  a->n--;
  while (a->slots[i]) {
    int64_t k = a->slots[i];
    a->slots[i] = 0;
    a->slots[slot_of(a, a->e[k - 1].name, a->e[k - 1].namelen)] = k;
    i = (i + 1) & mask;
  }
}

int ms_archive_put_tensor(ms_archive *a, const char *name, const ms_tensor *t) {
  if (t == NULL) return ms_ctx_fail(a->ctx, MS_EARG, "ms_archive_put_tensor: tensor is NULL");
  entry *e;
  int st = add(a, "ms_archive_put_tensor", name, MS_ARCHIVE_TENSOR, &e);
  if (st) return st;
  st = ms__tensor_plain_copy(a->ctx, t, &e->t);
  if (st) drop_last(a);
  return st;
}

int ms_archive_put_number(ms_archive *a, const char *name, double value) {
  entry *e;
  int st = add(a, "ms_archive_put_number", name, MS_ARCHIVE_NUMBER, &e);
  if (st == MS_OK) e->num = value;
  return st;
}

int ms_archive_put_integer(ms_archive *a, const char *name, int64_t value) {
  entry *e;
  int st = add(a, "ms_archive_put_integer", name, MS_ARCHIVE_INTEGER, &e);
  if (st == MS_OK) e->integer = value;
  return st;
}

int ms_archive_put_boolean(ms_archive *a, const char *name, int value) {
  entry *e;
  int st = add(a, "ms_archive_put_boolean", name, MS_ARCHIVE_BOOLEAN, &e);
  if (st == MS_OK) e->boolean = value != 0;
  return st;
}

int ms_archive_put_table(ms_archive *a, const char *name) {
  entry *e;
  return add(a, "ms_archive_put_table", name, MS_ARCHIVE_TABLE, &e);
}

int ms_archive_put_lstring(ms_archive *a, const char *name, const char *s, size_t len) {
  if (s == NULL && len > 0)
    return ms_ctx_fail(a->ctx, MS_EARG, "ms_archive_put_string: string is NULL");
  if (len >= SIZE_MAX / 2)
    return ms_ctx_fail(a->ctx, MS_EARG, "ms_archive_put_string: length %zu too large", len);
  entry *e;
  int st = add(a, "ms_archive_put_string", name, MS_ARCHIVE_STRING, &e);
  if (st) return st;
  e->str = ms_ctx_alloc(a->ctx, len + 1);
  if (e->str == NULL) {
    drop_last(a);
    return MS_ENOMEM;
  }
  if (len) memcpy(e->str, s, len);
  e->str[len] = '\0';
  e->len = len;
  return MS_OK;
}

int ms_archive_put_string(ms_archive *a, const char *name, const char *s) {
  if (s == NULL) return ms_ctx_fail(a->ctx, MS_EARG, "ms_archive_put_string: string is NULL");
  return ms_archive_put_lstring(a, name, s, strlen(s));
}

int64_t ms_archive_count(const ms_archive *a) { return a->n; }

int ms_archive_entry(const ms_archive *a, int64_t i, const char **name, ms_archive_kind *kind) {
  if (i < 0 || i >= a->n)
    return ms_ctx_fail(a->ctx, MS_EINDEX, "ms_archive_entry: index %lld out of range [0, %lld)",
                       (long long)i, (long long)a->n);
  if (name) *name = a->e[i].name;
  if (kind) *kind = a->e[i].kind;
  return MS_OK;
}

ms_archive_kind ms_archive_find(const ms_archive *a, const char *name) {
  const entry *e = lookup(a, name);
  return e ? e->kind : MS_ARCHIVE_NONE;
}

static const char *kind_name(ms_archive_kind k) {
  switch (k) {
    case MS_ARCHIVE_TENSOR:
      return "a tensor";
    case MS_ARCHIVE_NUMBER:
      return "a number";
    case MS_ARCHIVE_INTEGER:
      return "an integer";
    case MS_ARCHIVE_STRING:
      return "a string";
    case MS_ARCHIVE_BOOLEAN:
      return "a boolean";
    case MS_ARCHIVE_TABLE:
      return "a table";
    default:
      return "nothing";
  }
}

static int get(const ms_archive *a, const char *fn, const char *name, ms_archive_kind kind,
               const entry **out) {
  const entry *e = lookup(a, name);
  if (e == NULL)
    return ms_ctx_fail(a->ctx, MS_EINDEX, "%s: no entry '%s'", fn, name ? name : "(NULL)");
  if (e->kind != kind)
    return ms_ctx_fail(a->ctx, MS_EARG, "%s: entry '%s' is %s, not %s", fn, name,
                       kind_name(e->kind), kind_name(kind));
  *out = e;
  return MS_OK;
}

int ms_archive_get_tensor(const ms_archive *a, const char *name, ms_tensor **out) {
  *out = NULL;
  const entry *e;
  int st = get(a, "ms_archive_get_tensor", name, MS_ARCHIVE_TENSOR, &e);
  return st ? st : ms__tensor_plain_copy(a->ctx, e->t, out);
}

int ms_archive_get_number(const ms_archive *a, const char *name, double *out) {
  const entry *e;
  int st = get(a, "ms_archive_get_number", name, MS_ARCHIVE_NUMBER, &e);
  if (st == MS_OK) *out = e->num;
  return st;
}

int ms_archive_get_integer(const ms_archive *a, const char *name, int64_t *out) {
  const entry *e;
  int st = get(a, "ms_archive_get_integer", name, MS_ARCHIVE_INTEGER, &e);
  if (st == MS_OK) *out = e->integer;
  return st;
}

int ms_archive_get_boolean(const ms_archive *a, const char *name, int *out) {
  const entry *e;
  int st = get(a, "ms_archive_get_boolean", name, MS_ARCHIVE_BOOLEAN, &e);
  if (st == MS_OK) *out = e->boolean;
  return st;
}

int ms_archive_get_string(const ms_archive *a, const char *name, const char **s, size_t *len) {
  const entry *e;
  int st = get(a, "ms_archive_get_string", name, MS_ARCHIVE_STRING, &e);
  if (st) return st;
  *s = e->str;
  if (len) *len = e->len;
  return MS_OK;
}

/* ---- saving ---- */

typedef struct writer {
  FILE *f;
  crc32_state crc;
  int failed;
} writer;

static void wr(writer *w, const void *p, size_t n) {
  if (w->failed || n == 0) return;
  crc_update(&w->crc, p, n);
  if (fwrite(p, 1, n, w->f) != n) w->failed = 1;
}

static void wr_u32(writer *w, uint32_t v) {
  unsigned char b[4];
  put_u32(b, v);
  wr(w, b, 4);
}

static void wr_u64(writer *w, uint64_t v) {
  unsigned char b[8];
  put_u64(b, v);
  wr(w, b, 8);
}

/* Bytes entry e takes in the body. */
static uint64_t entry_size(const entry *e) {
  uint64_t n = 8 + e->namelen;
  switch (e->kind) {
    case MS_ARCHIVE_TENSOR:
      return n + 8 + 8 * (uint64_t)ms_tensor_ndim(e->t) + 8 * (uint64_t)ms_tensor_numel(e->t);
    case MS_ARCHIVE_NUMBER:
    case MS_ARCHIVE_INTEGER:
      return n + 8;
    case MS_ARCHIVE_STRING:
      return n + 8 + e->len;
    case MS_ARCHIVE_BOOLEAN:
      return n + 1;
    default:
      return n;
  }
}

static void write_entry(writer *w, const entry *e) {
  wr_u32(w, (uint32_t)e->kind);
  wr_u32(w, (uint32_t)e->namelen);
  wr(w, e->name, e->namelen);
  switch (e->kind) {
    case MS_ARCHIVE_TENSOR: {
      int nd = ms_tensor_ndim(e->t);
      wr_u32(w, DTYPE_F64);
      wr_u32(w, (uint32_t)nd);
      for (int i = 0; i < nd; i++) wr_u64(w, (uint64_t)ms_tensor_dim(e->t, i));
      const double *d = ms_tensor_data(e->t); /* contiguous: put and load make copies */
      int64_t n = ms_tensor_numel(e->t);
      unsigned char buf[4096];
      for (int64_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < sizeof buf && i < n; k += 8, i++) put_u64(buf + k, dbits(d[i]));
        wr(w, buf, k);
      }
      break;
    }
    case MS_ARCHIVE_NUMBER:
      wr_u64(w, dbits(e->num));
      break;
    case MS_ARCHIVE_INTEGER:
      wr_u64(w, (uint64_t)e->integer);
      break;
    case MS_ARCHIVE_STRING:
      wr_u64(w, e->len);
      wr(w, e->str, e->len);
      break;
    case MS_ARCHIVE_BOOLEAN: {
      unsigned char b = (unsigned char)e->boolean;
      wr(w, &b, 1);
      break;
    }
    default:
      break;
  }
}

/* Opens a new temporary file beside path ("<path>.tmp.<pid>[.k]"), exclusively, with the
 * permissions a new file gets (0666 less the umask). tmp receives its name. */
static int open_temp(const char *path, char *tmp, size_t size) {
  for (int k = 0; k < 100; k++) {
    if (k == 0)
      snprintf(tmp, size, "%s.tmp.%ld", path, (long)getpid());
    else
      snprintf(tmp, size, "%s.tmp.%ld.%d", path, (long)getpid(), k);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return -1;
}

/* fsync of the directory holding path, so the rename itself survives a crash. Errors are
 * ignored: some file systems cannot sync a directory, and the data is already safe. */
static void sync_dir(const char *path, char *buf, size_t size) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    snprintf(buf, size, ".");
  else if (slash == path)
    snprintf(buf, size, "/");
  else
    snprintf(buf, size, "%.*s", (int)(slash - path), path);
  int fd = open(buf, O_RDONLY);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
}

int ms_archive_save(ms_archive *a, const char *path) {
  ms_ctx *ctx = a->ctx;
  if (path == NULL) return ms_ctx_fail(ctx, MS_EARG, "ms_archive_save: path is NULL");
  size_t plen = strlen(path), tsize = plen + 48;
  char *tmp = ms_ctx_alloc(ctx, tsize);
  if (tmp == NULL) return MS_ENOMEM;
  int fd = open_temp(path, tmp, tsize);
  if (fd < 0) {
    int st = ms_ctx_fail(ctx, MS_ESTATE, "ms_archive_save: '%s': cannot create '%s': %s", path, tmp,
                         strerror(errno));
    ms_ctx_dealloc(ctx, tmp, tsize);
    return st;
  }
  writer w = {fdopen(fd, "wb"), {{0}, 0}, 0};
  if (w.f == NULL) {
    int err = errno;
    close(fd);
    unlink(tmp);
    int st = ms_ctx_fail(ctx, MS_ESTATE, "ms_archive_save: '%s': %s", path, strerror(err));
    ms_ctx_dealloc(ctx, tmp, tsize);
    return st;
  }
  crc_init(&w.crc);
  uint64_t body = 0;
  for (int64_t i = 0; i < a->n; i++) body += entry_size(&a->e[i]);
  wr(&w, MAGIC, sizeof MAGIC);
  wr_u32(&w, MS_ARCHIVE_VERSION);
  wr_u32(&w, 0); /* flags */
  wr_u64(&w, (uint64_t)a->n);
  wr_u64(&w, body);
  for (int64_t i = 0; i < a->n; i++) write_entry(&w, &a->e[i]);
  unsigned char crc[4];
  put_u32(crc, crc_final(&w.crc));
  wr(&w, crc, 4);
  const char *what = NULL;
  int err = 0;
  if (w.failed || fflush(w.f) != 0)
    what = "writing", err = errno;
  else if (fsync(fileno(w.f)) != 0)
    what = "syncing", err = errno;
  if (fclose(w.f) != 0 && what == NULL) what = "closing", err = errno;
  if (what == NULL && rename(tmp, path) != 0) what = "renaming it over the target", err = errno;
  int st = MS_OK;
  if (what) {
    unlink(tmp);
    st = ms_ctx_fail(ctx, MS_ESTATE, "ms_archive_save: '%s': %s '%s' failed: %s", path, what, tmp,
                     err ? strerror(err) : "I/O error");
  } else {
    sync_dir(path, tmp, tsize);
  }
  ms_ctx_dealloc(ctx, tmp, tsize);
  return st;
}

/* ---- loading ---- */

typedef struct reader {
  ms_ctx *ctx;
  const char *path;
  const unsigned char *p, *end;
  int64_t index; /* entry being read */
} reader;

/* Fails with "ms_archive_load: '<path>': <msg>". */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
bad(const reader *r, const char *fmt, ...) {
  char msg[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ms_ctx_fail(r->ctx, MS_EARG, "ms_archive_load: '%s': %s", r->path, msg);
}

/* Takes n bytes from the body; fails when fewer are left. */
static int take(reader *r, uint64_t n, const char *what, const unsigned char **out) {
  if ((uint64_t)(r->end - r->p) < n)
    return bad(r, "entry %lld: its %s (%llu bytes) runs past the end of the entries",
               (long long)r->index + 1, what, (unsigned long long)n);
  *out = r->p;
  r->p += n;
  return MS_OK;
}

static int read_entry(reader *r, ms_archive *a) {
  const unsigned char *p = NULL;
  int st = take(r, 8, "header", &p);
  if (st) return st;
  uint32_t kind = get_u32(p), namelen = get_u32(p + 4);
  if (kind < MS_ARCHIVE_TENSOR || kind > MS_ARCHIVE_TABLE)
    return bad(r, "entry %lld: unknown kind %u", (long long)r->index + 1, kind);
  if (namelen > MS_ARCHIVE_MAXNAME)
    return bad(r, "entry %lld: name length %u exceeds %d", (long long)r->index + 1, namelen,
               MS_ARCHIVE_MAXNAME);
  const unsigned char *name = NULL;
  if ((st = take(r, namelen, "name", &name))) return st;
  if (memchr(name, 0, namelen))
    return bad(r, "entry %lld: name contains a NUL byte", (long long)r->index + 1);
  char nbuf[MS_ARCHIVE_MAXNAME + 1];
  memcpy(nbuf, name, namelen);
  nbuf[namelen] = '\0';
  if (lookup(a, nbuf))
    return bad(r, "entry %lld: duplicate name '%s'", (long long)r->index + 1, nbuf);
  int64_t shape[MS_MAXDIM];
  int ndim = 0;
  uint64_t len = 0;
  const unsigned char *data = NULL;
  switch (kind) {
    case MS_ARCHIVE_TENSOR: {
      if ((st = take(r, 8, "tensor header", &p))) return st;
      uint32_t dtype = get_u32(p), nd = get_u32(p + 4);
      if (dtype != DTYPE_F64)
        return bad(r, "entry %lld ('%s'): unknown dtype %u (1 = float64)", (long long)r->index + 1,
                   nbuf, dtype);
      if (nd > MS_MAXDIM)
        return bad(r, "entry %lld ('%s'): %u dimensions (at most %d)", (long long)r->index + 1,
                   nbuf, nd, MS_MAXDIM);
      ndim = (int)nd;
      if ((st = take(r, 8 * (uint64_t)nd, "shape", &p))) return st;
      uint64_t numel = 1;
      for (int i = 0; i < ndim; i++) {
        uint64_t d = get_u64(p + 8 * i);
        /* The data must fit in what is left of the file, which bounds every product. */
        uint64_t left = (uint64_t)(r->end - r->p) / 8;
        if (d > (uint64_t)INT64_MAX || (d > 0 && numel > left / d && numel > 0))
          return bad(r, "entry %lld ('%s'): shape entry %d (%llu) is larger than the file",
                     (long long)r->index + 1, nbuf, i + 1, (unsigned long long)d);
        shape[i] = (int64_t)d;
        numel *= d;
      }
      if ((st = take(r, 8 * numel, "data", &data))) return st;
      break;
    }
    case MS_ARCHIVE_NUMBER:
    case MS_ARCHIVE_INTEGER:
      if ((st = take(r, 8, "value", &data))) return st;
      break;
    case MS_ARCHIVE_STRING: {
      if ((st = take(r, 8, "length", &p))) return st;
      len = get_u64(p);
      if ((st = take(r, len, "string", &data))) return st;
      break;
    }
    case MS_ARCHIVE_BOOLEAN:
      if ((st = take(r, 1, "value", &data))) return st;
      if (data[0] > 1)
        return bad(r, "entry %lld ('%s'): boolean byte %u is neither 0 nor 1",
                   (long long)r->index + 1, nbuf, data[0]);
      break;
    default:
      break;
  }
  entry *e;
  switch (kind) {
    case MS_ARCHIVE_TENSOR: {
      ms_tensor *t;
      if ((st = ms__shape_numel(a->ctx, "ms_archive_load", ndim, shape, NULL))) return st;
      if ((st = ms_tensor_empty(a->ctx, ndim, shape, &t))) return st;
      double *d = ms_tensor_data(t);
      for (int64_t i = 0, n = ms_tensor_numel(t); i < n; i++) d[i] = bitsd(get_u64(data + 8 * i));
      if ((st = add(a, "ms_archive_load", nbuf, MS_ARCHIVE_TENSOR, &e))) {
        ms_tensor_release(t);
        return st;
      }
      e->t = t;
      return MS_OK;
    }
    case MS_ARCHIVE_STRING:
      return ms_archive_put_lstring(a, nbuf, (const char *)data, (size_t)len);
    case MS_ARCHIVE_NUMBER:
      return ms_archive_put_number(a, nbuf, bitsd(get_u64(data)));
    case MS_ARCHIVE_INTEGER:
      return ms_archive_put_integer(a, nbuf, (int64_t)get_u64(data));
    case MS_ARCHIVE_BOOLEAN:
      return ms_archive_put_boolean(a, nbuf, data[0]);
    default:
      return ms_archive_put_table(a, nbuf);
  }
}

/* Validates buf (size bytes) and fills a. */
static int parse(reader *r, const unsigned char *buf, size_t size, ms_archive *a) {
  size_t m = size < sizeof MAGIC ? size : sizeof MAGIC;
  if (memcmp(buf, MAGIC, m) != 0) return bad(r, "not a metastep archive (bad magic)");
  if (size < HEADER_SIZE + TRAILER_SIZE)
    return bad(r, "truncated: %zu bytes, an archive has at least %d", size,
               HEADER_SIZE + TRAILER_SIZE);
  uint32_t version = get_u32(buf + 8), flags = get_u32(buf + 12);
  if (version != MS_ARCHIVE_VERSION)
    return bad(r, "format version %u is not supported (this build reads version %d)", version,
               MS_ARCHIVE_VERSION);
  uint64_t count = get_u64(buf + 16), body = get_u64(buf + 24);
  uint64_t avail = size - HEADER_SIZE - TRAILER_SIZE;
  if (body > avail)
    return bad(r, "truncated: the header announces %llu bytes of entries, the file holds %llu",
               (unsigned long long)body, (unsigned long long)avail);
  if (body < avail)
    return bad(r, "%llu bytes of trailing data after the archive",
               (unsigned long long)(avail - body));
  crc32_state crc;
  crc_init(&crc);
  crc_update(&crc, buf, size - TRAILER_SIZE);
  uint32_t stored = get_u32(buf + size - TRAILER_SIZE), computed = crc_final(&crc);
  if (stored != computed)
    return bad(r, "checksum mismatch (stored 0x%08x, computed 0x%08x): the file is corrupted",
               stored, computed);
  if (flags != 0) return bad(r, "unknown flags 0x%08x", flags);
  if (count > body / 8)
    return bad(r, "%llu entries cannot fit in %llu bytes", (unsigned long long)count,
               (unsigned long long)body);
  r->p = buf + HEADER_SIZE;
  r->end = r->p + body;
  for (r->index = 0; r->index < (int64_t)count; r->index++) {
    int st = read_entry(r, a);
    if (st) return st;
  }
  if (r->p != r->end)
    return bad(r, "%lld bytes left after the last entry", (long long)(r->end - r->p));
  return MS_OK;
}

int ms_archive_load(ms_ctx *ctx, const char *path, ms_archive **out) {
  *out = NULL;
  if (path == NULL) return ms_ctx_fail(ctx, MS_EARG, "ms_archive_load: path is NULL");
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return ms_ctx_fail(ctx, MS_ESTATE, "ms_archive_load: cannot open '%s': %s", path,
                       strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return ms_ctx_fail(ctx, MS_ESTATE, "ms_archive_load: '%s' is not a regular file", path);
  }
  size_t size = (size_t)sb.st_size;
  unsigned char *buf = ms_ctx_alloc(ctx, size);
  if (buf == NULL) {
    fclose(f);
    return MS_ENOMEM;
  }
  size_t got = size ? fread(buf, 1, size, f) : 0;
  int err = ferror(f) ? errno : 0;
  fclose(f);
  int st;
  if (got != size) {
    st = ms_ctx_fail(ctx, MS_ESTATE, "ms_archive_load: '%s': read %zu of %zu bytes: %s", path, got,
                     size, err ? strerror(err) : "file shrank while reading");
  } else {
    ms_archive *a;
    st = ms_archive_new(ctx, &a);
    if (st == MS_OK) {
      reader r = {ctx, path, NULL, NULL, 0};
      st = parse(&r, buf, size, a);
      if (st)
        ms_archive_free(a);
      else
        *out = a;
    }
  }
  ms_ctx_dealloc(ctx, buf, size);
  return st;
}
