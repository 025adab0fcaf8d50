import CCairnIO

/// Process-wide allocator policy for a daemon that moves large I/O buffers between threads.
public enum HeapTuning {
    /// Keeps heap blocks of up to `bytes` in the heap: glibc then neither serves them with a fresh `mmap`
    /// (pages zero-filled on first touch) nor unmaps or trims them on free. Returns false if glibc refused.
    ///
    /// Why: WRITE payloads and READ replies are buffers of up to 32 MiB, allocated on one thread and freed
    /// on another at line rate. With glibc's defaults each one was an mmap of fresh pages: profiled on
    /// 1 MiB sequential writes, page faults and page clearing took two thirds of the event loop's time.
    @discardableResult
    public static func retainHeapBlocks(upTo bytes: Int) -> Bool {
        cairn_retain_heap_blocks(Int32(clamping: bytes)) != 0
    }
}
