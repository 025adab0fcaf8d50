// CRC-32C for the mirror protocol's frames. A C target because Swift cannot reach the CPU's CRC32
// instruction, and a debug build of the Swift table loop runs at tens of MB/s, which throttled the
// mirror itself. The instruction path is picked once at run time; the table path gives identical
// results (the Swift tests compare both, and the three-stream path on random buffers, against the
// portable reference).
#include "mirror_crc.h"

#include <string.h>

static uint32_t table[256];
static int initialized;
static int hardware;
// 1 when the three-stream path may run (the CPU has PCLMULQDQ as well as SSE4.2).
static int clmul;

#if defined(__x86_64__)
#include <immintrin.h>

// Three streams at once. One CRC32 instruction has a latency of three cycles but the CPU can start one
// every cycle, so a single dependent chain leaves two thirds of the unit idle (measured: ~3x on 1 MiB).
// A buffer is cut into three equal streams, each CRC'd from zero in the same loop; the partial CRCs are
// then joined by "shifting" the earlier one past the later stream's length: multiplying by
// x^(8·length) mod P with one carry-less multiply and one CRC32 reduction. The multipliers depend only on
// the stream length, so there are two fixed lengths (long for bulk data, short for 4 KiB host writes) and
// their constants are computed once; what remains after the last block goes through the serial loop.
enum { long_stream = 8192, short_stream = 256 };
static uint32_t long_shift, short_shift;

// x^n mod P in the reflected representation (bit 31 is x^0).
static uint32_t x_power(size_t n) {
    uint32_t value = 0x80000000u;
    while (n--) value = (value & 1) ? (value >> 1) ^ 0x82F63B78u : value >> 1;
    return value;
}

static void initialize_shifts(void) {
    // clmul of two reflected 32-bit values is the reflected product times x, and CRC32 of the 64-bit
    // product multiplies by x^32: so x^(8n - 33) makes the whole step x^(8n).
    long_shift = x_power(8 * (size_t)long_stream - 33);
    short_shift = x_power(8 * (size_t)short_stream - 33);
}

__attribute__((target("sse4.2,pclmul")))
static uint32_t shift(uint32_t crc, uint32_t constant) {
    __m128i product = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)crc), _mm_cvtsi32_si128((int)constant), 0);
    return (uint32_t)_mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(product));
}

__attribute__((target("sse4.2,pclmul")))
static uint64_t three_streams(uint64_t c, const unsigned char **pointer, size_t *remaining, size_t stream,
                              uint32_t constant) {
    const unsigned char *p = *pointer;
    size_t n = *remaining;
    while (n >= 3 * stream) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *end = p + stream;
        do {
            uint64_t a, b, d;
            memcpy(&a, p, 8);
            memcpy(&b, p + stream, 8);
            memcpy(&d, p + 2 * stream, 8);
            c = _mm_crc32_u64(c, a);
            c1 = _mm_crc32_u64(c1, b);
            c2 = _mm_crc32_u64(c2, d);
            p += 8;
        } while (p < end);
        c = shift((uint32_t)c, constant) ^ c1;
        c = shift((uint32_t)c, constant) ^ c2;
        p += 2 * stream;
        n -= 3 * stream;
    }
    *pointer = p;
    *remaining = n;
    return c;
}

// Wide folding (CPUs with AVX-512 and VPCLMULQDQ): four 64-byte accumulators, each 128-bit lane folded
// forward 256 bytes per step by two carry-less multiplies (the lane's halves times x^(D+31) and
// x^(D-33) mod P, D the distance in bits, in the same reflected convention as `shift`), then the
// accumulators and lanes folded into one 128-bit value congruent to the data, which one CRC32 of its 16
// bytes reduces (CRC32 of a message from zero is the message times x^32 mod P). The initial CRC is
// XORed into the first four bytes, which is what continuing from it means. Measured ~4x the three
// streams on 1 MiB.
enum { fold_block = 256 };
static uint64_t fold_2048[2], fold_512[2], fold_384[2], fold_256[2], fold_128[2];
static int wide;

static void fold_constants(uint64_t *pair, size_t distance) {
    pair[0] = x_power(distance + 31);
    pair[1] = x_power(distance - 33);
}

static void initialize_folding(void) {
    fold_constants(fold_2048, 2048);
    fold_constants(fold_512, 512);
    fold_constants(fold_384, 384);
    fold_constants(fold_256, 256);
    fold_constants(fold_128, 128);
}

__attribute__((target("avx512f,vpclmulqdq,pclmul")))
static inline __m512i fold512(__m512i x, __m512i k, __m512i data) {
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), data,
                                     0x96);
}

__attribute__((target("pclmul,sse4.2")))
static inline __m128i fold128(__m128i x, const uint64_t *k) {
    __m128i constant = _mm_set_epi64x((long long)k[1], (long long)k[0]);
    return _mm_xor_si128(_mm_clmulepi64_si128(x, constant, 0x00), _mm_clmulepi64_si128(x, constant, 0x11));
}

// Folds all whole 256-byte blocks of at least `fold_block` bytes; returns the CRC after them.
__attribute__((target("avx512f,vpclmulqdq,pclmul,sse4.2")))
static uint32_t fold_wide(uint32_t crc, const unsigned char **pointer, size_t *remaining) {
    const unsigned char *p = *pointer;
    size_t n = *remaining;
    __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    __m512i x1 = _mm512_loadu_si512(p + 64);
    __m512i x2 = _mm512_loadu_si512(p + 128);
    __m512i x3 = _mm512_loadu_si512(p + 192);
    p += fold_block;
    n -= fold_block;
    __m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_2048[1], (long long)fold_2048[0]));
    while (n >= fold_block) {
        x0 = fold512(x0, k, _mm512_loadu_si512(p));
        x1 = fold512(x1, k, _mm512_loadu_si512(p + 64));
        x2 = fold512(x2, k, _mm512_loadu_si512(p + 128));
        x3 = fold512(x3, k, _mm512_loadu_si512(p + 192));
        p += fold_block;
        n -= fold_block;
    }
    k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)fold_512[1], (long long)fold_512[0]));
    x1 = fold512(x0, k, x1);
    x2 = fold512(x1, k, x2);
    x3 = fold512(x2, k, x3);
    __m128i folded = _mm_xor_si128(fold128(_mm512_extracti32x4_epi32(x3, 0), fold_384),
                                   fold128(_mm512_extracti32x4_epi32(x3, 1), fold_256));
    folded = _mm_xor_si128(folded, fold128(_mm512_extracti32x4_epi32(x3, 2), fold_128));
    folded = _mm_xor_si128(folded, _mm512_extracti32x4_epi32(x3, 3));
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(folded));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(folded, 1));
    *pointer = p;
    *remaining = n;
    return (uint32_t)c;
}

__attribute__((target("sse4.2,pclmul")))
static uint32_t hardware_crc(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    // Up to 8-byte alignment first: the loads below then never straddle a cache line.
    while (n > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    if (wide && n >= fold_block) c = fold_wide((uint32_t)c, &p, &n);
    if (clmul) {
        c = three_streams(c, &p, &n, long_stream, long_shift);
        c = three_streams(c, &p, &n, short_stream, short_shift);
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
static uint32_t hardware_crc(uint32_t crc, const unsigned char *p, size_t n) {
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        crc = __crc32cd(crc, word);
        p += 8;
        n -= 8;
    }
    while (n--) crc = __crc32cb(crc, *p++);
    return crc;
}
#else
static uint32_t hardware_crc(uint32_t crc, const unsigned char *p, size_t n) { (void)p; (void)n; return crc; }
#endif

static void initialize(void) {
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        table[byte] = crc;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    hardware = __builtin_cpu_supports("sse4.2");
    clmul = hardware && __builtin_cpu_supports("pclmul");
    if (clmul) initialize_shifts();
    wide = clmul && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq");
    if (wide) initialize_folding();
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
    hardware = 1;
#endif
    __atomic_store_n(&initialized, 1, __ATOMIC_RELEASE);
}

uint32_t mirror_crc32c(uint32_t crc, const void *data, size_t length) {
    if (!__atomic_load_n(&initialized, __ATOMIC_ACQUIRE)) initialize();
    const unsigned char *p = data;
    crc = ~crc;
    if (hardware) {
        crc = hardware_crc(crc, p, length);
    } else {
        while (length--) crc = table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    }
    return ~crc;
}

int mirror_crc32c_hardware(void) {
    if (!__atomic_load_n(&initialized, __ATOMIC_ACQUIRE)) initialize();
    return hardware;
}
