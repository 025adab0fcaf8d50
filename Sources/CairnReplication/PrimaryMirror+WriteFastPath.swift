import MirrorProtocol
import NIOCore
import Synchronization

/// The synchronous write path without Swift concurrency, for the common case in which nothing has to wait.
///
/// Measured (bench/mirror.py, perf on the primary): the task-based `write` cost each host write a task, an
/// `async let` child task and about six thread hops (event loop → cooperative pool → connection loop → pool →
/// I/O thread → pool → event loop), which dominated a 4 KiB write whenever cores were contended. Here the overlap gate,
/// the write-intent check, the frame and the local write are all issued from the host's event loop and joined
/// with futures. Anything unusual (an overlapping write in flight, a change-map bit not yet durable, no
/// connection, a frame larger than the frame size, asynchronous mode, a failed first attempt) falls back to
/// the task-based path, which applies the same rules with waiting, retries and fracture.
extension PrimaryMirror {
    /// Issues `operation` without a task if nothing has to wait: returns nil (having changed nothing) when the
    /// caller must use `write` instead. The future completes on `eventLoop`, with `local`'s error if the local
    /// write failed.
    public func writeWithoutWaiting(
        _ operation: MirrorOperation, fua: Bool, eventLoop: any EventLoop,
        local: @escaping @Sendable () -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Void>? {
        let link = state.withLock { s in
            (
                linked: s.link.isLinked, epoch: s.link.epoch, connection: s.connection, handle: s.handle,
                frameSize: Int(s.record.frameSize), asynchronous: s.lag != nil
            )
        }
        guard link.linked, !link.asynchronous, let connection = link.connection, connection.isActive else { return nil }
        let flags: MirrorFrameFlags = fua ? .fua : []
        let command: MirrorCommand
        let frameFlags: MirrorFrameFlags
        let payload: ByteBuffer
        // A write's data goes after its 16-byte header without a copy (`MirrorFrame.data`).
        var frameData: ByteBuffer?
        switch operation {
        case .write(let offset, let data):
            guard data.readableBytes <= link.frameSize else { return nil }
            command = .write
            frameFlags = flags
            payload = MirrorWriteHeader.payload(handle: link.handle, offset: offset, data: ByteBuffer())
            frameData = data
        case .writeZeroes(let offset, let length, let punch):
            command = .writeZeroes
            frameFlags = punch ? flags.union(.punch) : flags
            payload = MirrorRange(handle: link.handle, offset: offset, length: length).payload
        case .trim(let offset, let length):
            command = .trim
            frameFlags = flags
            payload = MirrorRange(handle: link.handle, offset: offset, length: length).payload
        case .localCopy:
            return nil
        }
        let range = operation.offset..<(operation.offset + max(operation.length, 1))
        guard let token = gate.tryAcquire(range) else { return nil }
        let extents = changeMap.extents(offset: operation.offset, length: operation.length)
        // Durability rule 1: only when the bits are already durable; otherwise the waiting path syncs them.
        guard changeMap.beginWriteIfDurable(extents) else {
            gate.release(token)
            return nil
        }
        let epoch = link.epoch
        let data = frameData
        let remote = connection.requestFuture(
            command, flags: frameFlags, payload: payload, data: data, timeout: settings.frameTimeout)
        let written = local()
        let promise = eventLoop.makePromise(of: Void.self)
        remote.hop(to: eventLoop).whenComplete { remoteOutcome in
            written.whenComplete { localResult in
                let outcome = Self.firstAttempt(command, remoteOutcome)
                if case .acknowledged = outcome, localResult.isSuccess {
                    if command == .write {
                        self.state.withLock { $0.bytesReplicated += UInt64(data?.readableBytes ?? 0) }
                    }
                    self.changeMap.endWrite(extents, targetMissed: false)
                    self.gate.release(token)
                    return promise.succeed(())
                }
                // Rare: finish as the task-based path does (retries, fracture, resync), then answer.
                promise.completeWithTask {
                    let remoteResult: Result<Void, any Error>
                    switch outcome {
                    case .acknowledged:
                        remoteResult = .success(())
                    case .refused(let error):
                        remoteResult = .failure(error)
                    case .retry(let failure, let connectionLost):
                        if connectionLost { self.dropConnection(connection) }
                        if self.settings.retries < 1 {
                            remoteResult = .failure(
                                TargetUnavailable(reason: "no valid answer from \(self.record.target) after 1 attempt: \(failure)"))
                        } else {
                            // The retry path sends one contiguous payload (a copy, on this rare path only).
                            var whole = payload
                            if var data { whole.writeBuffer(&data) }
                            let retried = whole
                            remoteResult = await Self.capture {
                                _ = try await self.send(
                                    command, flags: frameFlags, payload: retried, startingAttempt: 1, lastFailure: failure)
                            }
                        }
                    }
                    let lost = await self.finishRemote(
                        remoteResult, localFailed: !localResult.isSuccess, extents: extents, epoch: epoch)
                    self.gate.release(token)
                    try localResult.get()
                    if lost { throw self.untrackedWriteError }
                }
            }
        }
        return promise.futureResult
    }

    /// What the first copy of a frame got, judged as `send` judges it.
    enum FirstAttempt: Sendable {
        case acknowledged
        /// The target's considered refusal: the mirror fractures.
        case refused(TargetUnavailable)
        /// Send it again (`connectionLost`: on a new connection).
        case retry(String, connectionLost: Bool)
    }

    static func firstAttempt(_ command: MirrorCommand, _ outcome: Result<MirrorFrame, any Error>) -> FirstAttempt {
        switch outcome {
        case .success(let reply):
            guard let error = reply.remoteError() else { return .acknowledged }
            if error.code == .checksumMismatch { return .retry(error.message, connectionLost: false) }
            return .refused(TargetUnavailable(reason: "target refused a \(command) frame: \(error.message)"))
        case .failure(let error as MirrorLinkError):
            switch error {
            case .timeout, .corruptedReply: return .retry("\(error)", connectionLost: false)
            case .connectionLost, .connectFailed: return .retry("\(error)", connectionLost: true)
            }
        case .failure(let error):
            return .retry("\(error)", connectionLost: true)
        }
    }
}
