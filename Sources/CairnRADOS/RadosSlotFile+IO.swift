import CairnIO
import Glibc
import Synchronization

extension RadosSlotFile {
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var reads: [(RadosCompletion, Int, Int)] = []
        do {
            try forEachPiece(at: offset, length: buffer.count) { index, inObject, inBuffer, length in
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[inBuffer..<inBuffer + length])
                reads.append((try io.aioRead(objectName(index), into: piece, at: inObject), inBuffer, length))
            }
        } catch {
            for (completion, _, _) in reads { _ = try? completion.wait() }
            throw ioError(error, "read")
        }
        var failure: (any Error)?
        for (completion, inBuffer, length) in reads {
            // Every read is waited for before returning: librados writes into the caller's buffer.
            do {
                let got = Int(try completion.wait())
                if got < length {
                    UnsafeMutableRawBufferPointer(rebasing: buffer[inBuffer + got..<inBuffer + length])
                        .initializeMemory(as: UInt8.self, repeating: 0)
                }
            } catch let error as RadosError where error.errno == ENOENT {
                UnsafeMutableRawBufferPointer(rebasing: buffer[inBuffer..<inBuffer + length])
                    .initializeMemory(as: UInt8.self, repeating: 0)
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw ioError(failure, "read") }
    }

    /// Never: nothing of a RADOS object is cached in this process.
    public func readIfCached(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool { false }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try submit(extendingTo: offset + UInt64(buffer.count), range: offset, length: buffer.count) {
            index, inObject, inBuffer, length in
            let piece = UnsafeRawBufferPointer(rebasing: buffer[inBuffer..<inBuffer + length])
            return try io.aioWrite(objectName(index), piece, at: inObject)
        }
    }

    public func writeDurably(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try write(buffer, at: offset)
        try sync()
    }

    public func sync() throws {
        let (batch, failureBefore) = state.withLock { state in
            let batch = state.pending
            state.pending.removeAll()
            return (batch, state.failure)
        }
        var failure = failureBefore
        for pending in batch {
            if let error = Self.outcome(pending) { failure = failure ?? error }
        }
        if let failure {
            state.withLock { $0.failure = $0.failure ?? failure }
            throw ioError(failure, "sync")
        }
        let size = state.withLock { $0.size }
        do {
            try recorded.withLock { recorded in
                guard size > recorded.size else { return }
                try io.setXattr(metaObject, "size", String(size))
                recorded.size = size
            }
        } catch {
            throw ioError(error, "sync")
        }
    }

    public func punchHole(at offset: UInt64, length: UInt64) throws {
        let end = min(offset + length, state.withLock { $0.size })
        guard end > offset else { return }
        try submit(extendingTo: 0, range: offset, length: Int(end - offset), absentIsFine: true) {
            index, inObject, _, length in
            if inObject == 0 && UInt64(length) == objectSize { return try io.aioRemove(objectName(index)) }
            return try io.aioZero(objectName(index), at: inObject, length: UInt64(length))
        }
    }

    public func zeroRange(at offset: UInt64, length: UInt64) throws {
        try punchHole(at: offset, length: length)
        state.withLock { state in state.size = max(state.size, offset + length) }
    }

    @discardableResult
    public func copy(from source: any StorageFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws
        -> CopyMethod
    {
        // RADOS copies only whole objects server-side; a chunk is a range inside one, so through memory.
        let step = 1 << 20
        var buffer = [UInt8](repeating: 0, count: min(Int(length), step))
        var done: UInt64 = 0
        while done < length {
            let count = min(Int(length - done), step)
            try buffer.withUnsafeMutableBytes { whole in
                let part = UnsafeMutableRawBufferPointer(rebasing: whole[0..<count])
                try source.read(into: part, at: sourceOffset + done)
                try write(UnsafeRawBufferPointer(part), at: offset + done)
            }
            done += UInt64(count)
        }
        return .userspace
    }

    public func size() throws -> UInt64 { state.withLock { $0.size } }

    public func truncate(to length: UInt64) throws {
        try sync()
        let kept = (length + objectSize - 1) / objectSize
        do {
            try recorded.withLock { recorded in
                var removals: [RadosCompletion] = []
                for index in kept..<max(kept, recorded.reservedObjects) {
                    removals.append(try io.aioRemove(objectName(index)))
                }
                for removal in removals {
                    do { try removal.wait() } catch let error as RadosError where error.errno == ENOENT {}
                }
                if length % objectSize != 0 {
                    try io.truncate(objectName(length / objectSize), to: length % objectSize)
                }
                try io.setXattr(metaObject, "size", String(length))
                recorded.size = length
            }
        } catch {
            throw ioError(error, "truncate")
        }
        state.withLock {
            $0.size = length
            $0.generation += 1
        }
    }

    public func allocatedBytes() throws -> UInt64 {
        let reserved = recorded.withLock { $0.reservedObjects }
        var total: UInt64 = 0
        var index: UInt64 = 0
        while index < reserved {
            let batch = try (index..<min(reserved, index + 64)).map { try io.aioStat(objectName($0)) }
            for stat in batch {
                do {
                    try stat.wait()
                    total += stat.size
                } catch let error as RadosError where error.errno == ENOENT {}
            }
            index += 64
        }
        return total
    }

    /// Submits one asynchronous operation per object piece of the range, first reserving the objects it
    /// may create, and keeps the completions for `sync`.
    private func submit(
        extendingTo end: UInt64, range offset: UInt64, length: Int, absentIsFine: Bool = false,
        _ operation: (UInt64, UInt64, Int, Int) throws -> RadosCompletion
    ) throws {
        guard length > 0 else { return }
        try reserveObjects(through: (offset + UInt64(length) - 1) / objectSize)
        var submitted: [Pending] = []
        do {
            try forEachPiece(at: offset, length: length) { index, inObject, inBuffer, pieceLength in
                submitted.append(
                    Pending(completion: try operation(index, inObject, inBuffer, pieceLength), absentIsFine: absentIsFine))
            }
        } catch {
            state.withLock { $0.pending.append(contentsOf: submitted) }
            throw ioError(error, "write")
        }
        let overflow: [Pending] = state.withLock { state in
            state.pending.append(contentsOf: submitted)
            state.generation += 1
            if end > state.size { state.size = end }
            // Drop what already finished (keeping the first failure); wait for the oldest beyond the limit.
            var kept: [Pending] = []
            for pending in state.pending {
                if pending.completion.isComplete {
                    if let error = Self.outcome(pending) { state.failure = state.failure ?? error }
                } else {
                    kept.append(pending)
                }
            }
            let excess = max(0, kept.count - Self.maxPendingWrites)
            state.pending = Array(kept[excess...])
            return Array(kept[..<excess])
        }
        for pending in overflow {
            if let error = Self.outcome(pending) { state.withLock { $0.failure = $0.failure ?? error } }
        }
    }

    /// Waits for one operation; nil when it succeeded.
    private static func outcome(_ pending: Pending) -> RadosError? {
        do {
            try pending.completion.wait()
            return nil
        } catch let error as RadosError {
            return pending.absentIsFine && error.errno == ENOENT ? nil : error
        } catch {
            return RadosError("wait", "completion", result: -EIO)
        }
    }

    /// Records, before any object at or past the reservation is created, that objects up to `index`
    /// may exist, so that a reopen after a crash knows which ones to cut away.
    private func reserveObjects(through index: UInt64) throws {
        do {
            try recorded.withLock { recorded in
                guard index >= recorded.reservedObjects else { return }
                let target = (index / Self.reservationStep + 1) * Self.reservationStep
                try io.setXattr(metaObject, "objects", String(target))
                recorded.reservedObjects = target
            }
        } catch {
            throw ioError(error, "write")
        }
    }
}
