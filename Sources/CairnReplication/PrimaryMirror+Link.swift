import CairnEngine
import CairnIO
import Foundation
import MirrorProtocol
import NIOCore
import Synchronization

/// The primary's link to the target: sending frames with retries, and (re)connecting.
extension PrimaryMirror {
    /// Sends a frame to the target and returns its successful reply. A late or corrupted frame is sent
    /// again (on the same connection; on a new one when the connection failed), up to `retries` times;
    /// then the target is unavailable (`TargetUnavailable`). A typed refusal from the target is thrown as
    /// it is.
    /// `startingAttempt`/`lastFailure`: the write fast path's first attempt already failed this way.
    func send(
        _ command: MirrorCommand, flags: MirrorFrameFlags = [], payload: ByteBuffer, startingAttempt: Int = 0,
        lastFailure: String = ""
    ) async throws -> MirrorFrame {
        var lastFailure = lastFailure
        for attempt in startingAttempt...max(startingAttempt, settings.retries) {
            if attempt > 0 { state.withLock { $0.retransmissions += 1 } }
            // After a fracture nothing reconnects behind the operator's back: re-establish does.
            guard isLinked || command == .establish || command == .status || command == .sever || command == .remove else {
                throw TargetUnavailable(reason: record.lastError ?? "the mirror is not linked")
            }
            let connection: MirrorConnection
            var payload = payload
            do {
                let (current, handle) = try await linkedConnection()
                connection = current
                // A frame naming the handle of an older connection is re-addressed (the handle is the
                // target's volume id, stable across connections, but re-read for clarity).
                // Only when it differs: writing into the payload copies the whole shared buffer (a 1 MiB
                // write frame: measured 11 % of the primary's CPU on bench/mirror.py write-1m-qd8).
                if command != .establish && command != .status && payload.readableBytes >= 8
                    && payload.getInteger(at: payload.readerIndex, as: UInt64.self) != handle
                {
                    payload.setInteger(handle, at: payload.readerIndex)
                }
            } catch let error as MirrorRemoteError {
                throw TargetUnavailable(reason: "target refused to resume: \(error.message)")
            } catch {
                lastFailure = "\(error)"
                try await Task.sleep(nanoseconds: UInt64(min(settings.frameTimeout, 1) * 1_000_000_000))
                continue
            }
            do {
                let reply = try await connection.request(
                    command, flags: flags, payload: payload, timeout: settings.frameTimeout)
                if let error = reply.remoteError() {
                    if error.code == .checksumMismatch {
                        lastFailure = error.message
                        continue
                    }
                    if command == .write || command == .writeZeroes || command == .trim || command == .flush {
                        throw TargetUnavailable(reason: "target refused a \(command) frame: \(error.message)")
                    }
                    throw error
                }
                if command == .write { state.withLock { $0.bytesReplicated += UInt64(payload.readableBytes - 16) } }
                return reply
            } catch let error as MirrorLinkError {
                lastFailure = "\(error)"
                switch error {
                case .timeout, .corruptedReply:
                    // Sent again on the same connection (re-send a copy after the timeout). A late
                    // answer to the first copy is ignored; applying a write twice is harmless, since no
                    // overlapping write is in flight (the overlap gate). Closing the connection here would fail
                    // every other frame in flight on it, and one slow frame would cost them all an attempt.
                    continue
                case .connectionLost, .connectFailed:
                    dropConnection(connection)
                }
            }
        }
        throw TargetUnavailable(
            reason: "no valid answer from \(record.target) after \(settings.retries + 1) attempts: \(lastFailure)")
    }

    /// The current connection, or a new one (connect, authenticate, establish to resume the pairing).
    func linkedConnection() async throws -> (MirrorConnection, UInt64) {
        let task = state.withLock { s -> Task<(MirrorConnection, UInt64), any Error>? in
            if let connection = s.connection, connection.isActive { return nil }
            if let connecting = s.connecting { return connecting }
            let task = Task { try await self.openConnection(initial: false, options: []) }
            s.connecting = task
            return task
        }
        guard let task else {
            return state.withLock { ($0.connection!, $0.handle) }
        }
        do {
            let result = try await task.value
            state.withLock { s in
                s.connecting = nil
                s.connection = result.0
                s.handle = result.1
            }
            return result
        } catch {
            state.withLock { $0.connecting = nil }
            throw error
        }
    }

    /// Connects and sends establish. A connection that replaces one that failed may follow a target
    /// restart that lost writes it had acknowledged but not flushed: the activity log's extents become
    /// dirty and a resync copies them.
    /// `explicit`: establish or re-establish asked for it (otherwise an automatic reconnect).
    func openConnection(initial: Bool, options: MirrorEstablishRequest.Options, explicit: Bool = false) async throws
        -> (MirrorConnection, UInt64)
    {
        guard let secret = settings.secret else {
            throw ReplicationError(.notConfigured, "this daemon has no --replication-secret-file")
        }
        let record = self.record
        let connection = try await MirrorConnection.connect(
            host: record.targetHost, port: record.targetPort, secret: secret, node: settings.node, group: settings.group,
            timeout: settings.frameTimeout, tls: settings.tls)
        do {
            let pool = self.pool
            let info = try await executor.run { try pool.volumes.info(named: Self.volumeName(pool, record.volumeID)) }
            var options = options
            if initial { options.insert(.initial) }
            // A pull of the target's changes is under way: the target must keep them across reconnects.
            if record.takingTargetChanges == true { options.insert(.takeTargetChanges) }
            options.insert(.create)
            let request = MirrorEstablishRequest(
                volume: record.targetVolume, size: info.size, chunkSize: info.chunkSize, generations: record.generations,
                requiredBytes: info.allocatedBytes, options: options)
            let reply = try await connection.request(.establish, payload: request.payload, timeout: settings.establishTimeout)
            if let error = reply.remoteError() { throw error }
            let established = try MirrorEstablishReply.decode(payload: reply.payload)
            let replaced = state.withLock { s -> Bool in
                s.connectionsOpened += 1
                if initial { s.targetFresh = established.created }
                return s.connectionsOpened > 1 && !initial
            }
            if established.fullSyncNeeded { changeMap.markAllDirty() }
            if replaced {
                changeMap.promoteActive()
                // A reconnect racing a fracture must not undo it: only re-establish relinks a fractured mirror.
                guard explicit || isLinked else {
                    throw TargetUnavailable(reason: record.lastError ?? "the mirror fractured")
                }
                if self.record.state == .mirrored { scheduleResync(reason: "the connection to the target was re-opened") }
            }
            return (connection, established.handle)
        } catch {
            connection.close()
            throw error
        }
    }

    func dropConnection(_ connection: MirrorConnection) {
        state.withLock { s in
            if s.connection === connection { s.connection = nil }
        }
        connection.close()
    }

    static func volumeName(_ pool: Pool, _ id: UInt64) throws -> String {
        guard let info = pool.volumes.list().first(where: { $0.id == id }) else {
            throw ReplicationError(.notFound, "the mirrored volume (id \(id)) no longer exists")
        }
        return info.name
    }

}
