// CRC-32C for the mirror protocol's frames. A C target because Swift cannot reach the CPU's CRC32
// instruction, and a debug build of the Swift table loop runs at tens of MB/s, which throttled the
// mirror itself. The instruction path is picked once at run time; the table path gives identical
// results (the Swift tests compare both against the bitwise definition).
#include "mirror_crc.h"

#include <string.h>

static uint32_t table[256];
static int initialized;
static int hardware;

static void initialize(void) {
    for (uint32_t byte = 0; byte < 256; byte++) {
        uint32_t crc = byte;
        for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        table[byte] = crc;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    hardware = __builtin_cpu_supports("sse4.2");
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
    hardware = 1;
#endif
    __atomic_store_n(&initialized, 1, __ATOMIC_RELEASE);
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t hardware_crc(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
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
