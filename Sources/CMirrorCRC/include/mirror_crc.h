#ifndef MIRROR_CRC_H
#define MIRROR_CRC_H

#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `length` bytes at `data`, continuing from `crc` (0 to start). Uses the CPU's
/// CRC32 instruction (x86-64 SSE4.2, AArch64 CRC extension) when present, else a table.
uint32_t mirror_crc32c(uint32_t crc, const void *data, size_t length);

/// 1 when `mirror_crc32c` uses the CPU instruction.
int mirror_crc32c_hardware(void);

#endif
