/*
 * Data: IDX files (the MNIST family's format, gzip-compressed or plain), Fashion-MNIST from
 * Debian's dataset-fashion-mnist package, a small seeded synthetic image set, and tasks
 * (random disjoint training and validation subsets, optionally with label noise).
 *
 * Ownership: every tensor handed out through an `ms_tensor **` is a NEW REFERENCE; tensors
 * passed in are borrowed. On failure the out pointers are left NULL and nothing leaks.
 * File and format failures are MS_EIO with a message naming the function and the path;
 * bad arguments are MS_EARG / MS_ESHAPE.
 */
#ifndef METASTEP_DATA_H
#define METASTEP_DATA_H

#include <stdint.h>

#include "metastep/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Reads an IDX file (read through zlib, so a .gz file and a plain one both work): the
 * header (two zero bytes, the type byte 0x08 = unsigned byte, the number of dimensions, then
 * each dimension as a big-endian 32-bit integer) gives the shape of *out; the bytes become
 * doubles 0..255. MS_EIO naming the path when the file cannot be opened (with the system's
 * reason), the magic is wrong, the type is not 0x08, there are 0 or more than MS_MAXDIM
 * dimensions, the element count overflows, or the data is truncated or followed by extra
 * bytes.
 */
int ms_idx_load(ms_ctx *ctx, const char *path, ms_tensor **out);

/* Where Debian's dataset-fashion-mnist package installs the files. */
#define MS_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/*
 * Fashion-MNIST: split "train" (60000 images) or "test" (10000) from dir (NULL =
 * MS_FASHION_MNIST_DIR), read from <prefix>-images-idx3-ubyte.gz and
 * <prefix>-labels-idx1-ubyte.gz (prefix "train" or "t10k"; the names without .gz are tried
 * too). *images is [n,784] scaled to [0,1], *labels is [n] holding 0..9 as doubles. When
 * the files are absent the MS_EIO message says to install the Debian package
 * dataset-fashion-mnist. MS_EIO also when the two files disagree (counts, image size, labels
 * out of 0..9).
 */
int ms_fashion_mnist_load(ms_ctx *ctx, const char *dir, const char *split, ms_tensor **images,
                          ms_tensor **labels);

/*
 * A small synthetic image set, the same for the same seed on every machine: `classes`
 * prototype images of side x side pixels (smooth random blobs), and n images each made
 * from the prototype of a uniformly drawn class, mixed with up to 40% of another class's
 * prototype, plus Gaussian pixel noise (std 0.25), clamped to [0,1]. Learnable but not
 * trivially: with seed 1, 500 training images of side 8 and 10 classes, a linear classifier
 * (300 Adam steps) gets 89% of 1000 held-out images right and a 64-32-10 MLP 86%, while
 * both fit the training images (99-100%). *images [n, side*side], *labels [n] (0..classes-1 as
 * doubles). n >= 1, 2 <= side <= 64, 2 <= classes <= 100 (MS_EARG otherwise). The
 * prototypes come from the seed too: held-out images are a part of the same set (split it
 * with ms_image_task), not a set made with another seed.
 */
int ms_synthetic_images(ms_ctx *ctx, uint64_t seed, int64_t n, int64_t side, int classes,
                        ms_tensor **images, ms_tensor **labels);

/*
 * A task: n_train rows for training and n_valid other rows for validation, drawn without
 * replacement from (images [N,D], labels [N]) by a permutation seeded with seed, so the
 * two subsets are disjoint; n_train >= 1, n_valid >= 0 (an empty [0,D] / [0] validation
 * set then), n_train + n_valid <= N. Labels must be integers >= 0; the number of classes K
 * is max(labels) + 1. With probability label_noise (0 <= p <= 1) each label of BOTH subsets
 * is replaced by a class drawn uniformly from 0..K-1 (possibly the same one, so about
 * p (K-1)/K of the labels end up wrong). Outputs are fresh tensors: *Xtr [n_train,D],
 * *ytr [n_train], *Xva [n_valid,D], *yva [n_valid].
 */
int ms_image_task(ms_ctx *ctx, const ms_tensor *images, const ms_tensor *labels, int64_t n_train,
                  int64_t n_valid, double label_noise, uint64_t seed, ms_tensor **Xtr,
                  ms_tensor **ytr, ms_tensor **Xva, ms_tensor **yva);

#ifdef __cplusplus
}
#endif
#endif
