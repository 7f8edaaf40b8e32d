/*
 * kdumpy's batch page compressor: many pages per call, so that the per-page work runs without the
 * interpreter (ctypes releases the GIL for the whole call) and several threads compress at once.
 *
 * It links no compression library. kdumpy.formats.clib opens liblzo2, libz, libzstd, libsnappy and
 * libdeflate with ctypes and passes the addresses of their functions in `struct kdumpy_packer`; each
 * page is compressed by exactly the call makedumpfile makes (write_kdump_pages_cyclic()), so the
 * bytes are the library's and equal makedumpfile's; or, for zlib-format pages, by libdeflate (other
 * bytes, fewer of them, sooner).
 *
 * Zero pages are found here too, on the compressing threads: with -d 1 they are left out (the
 * writer stores them as the shared zero page); without, an all-zero page compresses to the same
 * bytes every time (the calls are deterministic), so the first one's result is kept and copied for
 * the others (a dump without -d 1 is mostly such pages).
 *
 * Loaded with ctypes, not imported: it has no Python module init and needs no Python headers.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { CODEC_LZO = 1, CODEC_ZLIB = 2, CODEC_ZSTD = 3, CODEC_SNAPPY = 4, CODEC_LIBDEFLATE = 5 };

typedef int (*lzo_compress_fn)(const uint8_t *src, size_t src_len, uint8_t *dst, size_t *dst_len,
                               void *wrkmem);
typedef size_t (*zstd_compress_fn)(void *cctx, void *dst, size_t cap, const void *src, size_t n,
                                   int level);
typedef int (*snappy_compress_fn)(const void *src, size_t n, void *dst, size_t *dst_len);
typedef int (*deflate_fn)(void *strm, int flush);
typedef int (*deflate_reset_fn)(void *strm);
typedef size_t (*libdeflate_zlib_fn)(void *compressor, const void *in, size_t n, void *out, size_t avail);

/* struct z_stream_s of zlib.h, LP64. */
struct zstream {
	const uint8_t *next_in;
	unsigned int avail_in;
	unsigned long total_in;
	uint8_t *next_out;
	unsigned int avail_out;
	unsigned long total_out;
	const char *msg;
	void *state;
	void *zalloc;
	void *zfree;
	void *opaque;
	int data_type;
	unsigned long adler;
	unsigned long reserved;
};

#define Z_FINISH 4
#define Z_STREAM_END 1

/* What this file implements, checked by kdumpy.formats.clib.helper(): an older build left in place
 * (the build is optional) must not be used for codecs it does not know. */
#define KDUMPY_PACK_ABI 2

int64_t kdumpy_pack_abi(void)
{
	return KDUMPY_PACK_ABI;
}

/* One thread's compressor; the layout is mirrored by kdumpy.formats.clib._Packer. */
struct kdumpy_packer {
	int64_t codec;
	int64_t page_size;
	int64_t bound;     /* most bytes one page may take while it is compressed */
	void *compress;    /* lzo1x_1_compress, ZSTD_compressCCtx, snappy_compress, deflate or
	                      libdeflate_zlib_compress */
	void *reset;       /* deflateReset (zlib) */
	void *state;       /* lzo work memory, ZSTD_CCtx, struct zstream or libdeflate_compressor */
	uint8_t *zero_out; /* `bound` bytes: the stored form of an all-zero page, once known */
	int64_t zero_len;  /* its length, 0 until known */
};

/* makedumpfile's is_zero_page(), 64 bytes at a time (memcpy: the page may be unaligned). */
static int is_zero(const uint8_t *p, size_t n)
{
	size_t words = n / 8;
	for (size_t i = 0; i < words; i += 8) {
		uint64_t acc = 0;
		size_t end = i + 8 < words ? i + 8 : words;
		for (size_t j = i; j < end; j++) {
			uint64_t w;
			memcpy(&w, p + 8 * j, 8);
			acc |= w;
		}
		if (acc)
			return 0;
	}
	for (size_t i = words * 8; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* The stored size of one page at `dst`: its compressed form if smaller than a page, else the page. */
static size_t store_one(const struct kdumpy_packer *pk, const uint8_t *page, uint8_t *dst)
{
	size_t ps = (size_t)pk->page_size;
	size_t n = ps;
	int ok = 0;

	switch (pk->codec) {
	case CODEC_LZO: {
		size_t out = 0;
		ok = ((lzo_compress_fn)pk->compress)(page, ps, dst, &out, pk->state) == 0;
		n = out;
		break;
	}
	case CODEC_ZSTD:
		n = ((zstd_compress_fn)pk->compress)(pk->state, dst, (size_t)pk->bound, page, ps, 1);
		ok = n < ps; /* error codes are the highest size_t values */
		break;
	case CODEC_SNAPPY: {
		size_t out = (size_t)pk->bound;
		ok = ((snappy_compress_fn)pk->compress)(page, ps, dst, &out) == 0;
		n = out;
		break;
	}
	case CODEC_ZLIB: {
		/* compress2(level 1)'s bytes, from one stream reset after each page (makedumpfile >= 1.6.7). */
		struct zstream *zs = pk->state;
		zs->next_in = page;
		zs->avail_in = (unsigned int)ps;
		zs->next_out = dst;
		zs->avail_out = (unsigned int)pk->bound;
		int rc = ((deflate_fn)pk->compress)(zs, Z_FINISH);
		n = zs->total_out;
		((deflate_reset_fn)pk->reset)(zs);
		ok = rc == Z_STREAM_END;
		break;
	}
	case CODEC_LIBDEFLATE:
		/* 0 when the stream does not fit in less than a page: then the page is stored raw. */
		n = ((libdeflate_zlib_fn)pk->compress)(pk->state, page, ps, dst, ps - 1);
		ok = n != 0;
		break;
	}
	if (!ok || n >= ps) {
		memmove(dst, page, ps);
		n = ps;
	}
	return n;
}

/*
 * Store the pages src + index[i] * page_size (i < count; index NULL means 0..count-1) back to back
 * from dst, each page's stored size in sizes[i]. With exclude_zero, an all-zero page is not stored
 * and its size is 0 (a stored page takes at least one byte). dst needs
 * count * page_size + bound - page_size bytes. Returns the bytes stored, or -1 for an unknown codec.
 */
int64_t kdumpy_pack(struct kdumpy_packer *pk, const uint8_t *src, const int64_t *index, int64_t count,
                    uint8_t *dst, int64_t *sizes, int64_t exclude_zero)
{
	size_t ps = (size_t)pk->page_size;
	uint8_t *out = dst;

	if (pk->codec < CODEC_LZO || pk->codec > CODEC_LIBDEFLATE)
		return -1;
	for (int64_t i = 0; i < count; i++) {
		const uint8_t *page = src + (size_t)(index ? index[i] : i) * ps;
		size_t n;
		if (is_zero(page, ps)) {
			if (exclude_zero) {
				n = 0;
			} else if (!pk->zero_len) {
				n = store_one(pk, page, out);
				memcpy(pk->zero_out, out, n);
				pk->zero_len = (int64_t)n;
			} else {
				n = (size_t)pk->zero_len;
				memcpy(out, pk->zero_out, n);
			}
		} else {
			n = store_one(pk, page, out);
		}
		sizes[i] = (int64_t)n;
		out += n;
	}
	return out - dst;
}
