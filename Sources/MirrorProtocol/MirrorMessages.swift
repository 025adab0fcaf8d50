import NIOCore

/// A payload type of the mirror protocol: fixed-width big-endian integers and length-prefixed strings.
public protocol MirrorMessage: Sendable, Equatable {
    func encode(into buffer: inout ByteBuffer)
    static func decode(from buffer: inout ByteBuffer) throws -> Self
}

extension MirrorMessage {
    /// The encoded payload.
    public var payload: ByteBuffer {
        var buffer = ByteBuffer()
        encode(into: &buffer)
        return buffer
    }

    /// Decodes a whole payload; trailing bytes are a protocol violation.
    public static func decode(payload: ByteBuffer) throws -> Self {
        var buffer = payload
        let message = try decode(from: &buffer)
        guard buffer.readableBytes == 0 else {
            throw MirrorPayloadError("\(buffer.readableBytes) unexpected bytes after a \(Self.self)")
        }
        return message
    }
}

/// Target → primary, first frame: the protocol version and a fresh nonce to prove the secret against.
public struct MirrorChallenge: MirrorMessage {
    public var version: UInt16
    public var nonce: [UInt8]

    public init(version: UInt16 = MirrorLimits.protocolVersion, nonce: [UInt8]) {
        self.version = version
        self.nonce = nonce
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(version)
        buffer.writeBytes(nonce)
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorChallenge {
        let version = try buffer.readMirrorInteger(as: UInt16.self)
        guard let nonce = buffer.readBytes(length: MirrorLimits.nonceLength) else {
            throw MirrorPayloadError("truncated challenge nonce")
        }
        return MirrorChallenge(version: version, nonce: nonce)
    }
}

/// Primary → target: proof of the shared secret (HMAC-SHA256 of the nonce), who is asking, and the
/// primary's own nonce, which the target must answer with `MirrorTargetProof` (mutual proof: a fake
/// target without the secret is refused before any host data goes to it).
public struct MirrorHello: MirrorMessage {
    public var version: UInt16
    public var proof: [UInt8]
    /// The primary node's name, for the target's logs and status.
    public var node: String
    /// The primary's challenge to the target (`MirrorLimits.nonceLength` bytes).
    public var nonce: [UInt8]

    public init(version: UInt16 = MirrorLimits.protocolVersion, proof: [UInt8], node: String, nonce: [UInt8]) {
        self.version = version
        self.proof = proof
        self.node = node
        self.nonce = nonce
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(version)
        buffer.writeBytes(proof)
        buffer.writeMirrorString(node)
        buffer.writeBytes(nonce)
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorHello {
        let version = try buffer.readMirrorInteger(as: UInt16.self)
        guard let proof = buffer.readBytes(length: MirrorLimits.proofLength) else {
            throw MirrorPayloadError("truncated hello proof")
        }
        let node = try buffer.readMirrorString()
        guard let nonce = buffer.readBytes(length: MirrorLimits.nonceLength) else {
            throw MirrorPayloadError("truncated hello nonce")
        }
        return MirrorHello(version: version, proof: proof, node: node, nonce: nonce)
    }
}

/// Target → primary, the reply to `hello`: the target's proof of the shared secret over both nonces.
public struct MirrorTargetProof: MirrorMessage {
    public var proof: [UInt8]

    public init(proof: [UInt8]) { self.proof = proof }

    public func encode(into buffer: inout ByteBuffer) { buffer.writeBytes(proof) }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorTargetProof {
        guard let proof = buffer.readBytes(length: MirrorLimits.proofLength) else {
            throw MirrorPayloadError("the target did not prove the replication secret")
        }
        return MirrorTargetProof(proof: proof)
    }
}

/// Generation identifiers of a mirror pair (DRBD's UUIDs, simplified to what one direction needs).
public struct MirrorGenerations: Sendable, Equatable, Codable {
    /// Random id of the pairing, fixed at the first establish: a target volume belongs to one pair.
    public var pairID: UInt64
    /// The generation at which both sides last held equal data (the end of the last resync).
    public var synced: UInt64
    /// The primary's current generation: equals `synced` while mirrored, a new one from each fracture.
    public var current: UInt64

    public init(pairID: UInt64, synced: UInt64, current: UInt64) {
        self.pairID = pairID
        self.synced = synced
        self.current = current
    }
}

/// Primary → target: pair `volume` with the primary volume described here, or resume the pairing.
public struct MirrorEstablishRequest: MirrorMessage {
    public struct Options: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Create the volume when it does not exist.
        public static let create = Options(rawValue: 1 << 0)
        /// The operator accepts that whatever the target wrote on its own is overwritten.
        public static let discardTargetChanges = Options(rawValue: 1 << 1)
        /// A new pairing (establish), as opposed to resuming one (re-establish, reconnect).
        public static let initial = Options(rawValue: 1 << 2)
        /// The operator chose to copy what the target wrote on its own back to the primary: the target keeps
        /// its change map (until `synchronized`) and becomes read-only to hosts again.
        public static let takeTargetChanges = Options(rawValue: 1 << 3)
    }

    public var volume: String
    public var size: UInt64
    public var chunkSize: UInt32
    public var generations: MirrorGenerations
    /// Bytes the primary volume has allocated: the target must have room for them.
    public var requiredBytes: UInt64
    public var options: Options

    public init(
        volume: String, size: UInt64, chunkSize: UInt32, generations: MirrorGenerations, requiredBytes: UInt64,
        options: Options
    ) {
        self.volume = volume
        self.size = size
        self.chunkSize = chunkSize
        self.generations = generations
        self.requiredBytes = requiredBytes
        self.options = options
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMirrorString(volume)
        buffer.writeInteger(size)
        buffer.writeInteger(chunkSize)
        buffer.writeInteger(generations.pairID)
        buffer.writeInteger(generations.synced)
        buffer.writeInteger(generations.current)
        buffer.writeInteger(requiredBytes)
        buffer.writeInteger(options.rawValue)
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorEstablishRequest {
        let volume = try buffer.readMirrorString()
        let size = try buffer.readMirrorInteger(as: UInt64.self)
        let chunkSize = try buffer.readMirrorInteger(as: UInt32.self)
        let generations = MirrorGenerations(
            pairID: try buffer.readMirrorInteger(as: UInt64.self), synced: try buffer.readMirrorInteger(as: UInt64.self),
            current: try buffer.readMirrorInteger(as: UInt64.self))
        let required = try buffer.readMirrorInteger(as: UInt64.self)
        let options = Options(rawValue: try buffer.readMirrorInteger(as: UInt32.self))
        return MirrorEstablishRequest(
            volume: volume, size: size, chunkSize: chunkSize, generations: generations, requiredBytes: required,
            options: options)
    }
}

/// Target → primary: the handle data frames name, and what the target knows.
public struct MirrorEstablishReply: MirrorMessage {
    /// Names the paired volume in data frames (the target's volume id).
    public var handle: UInt64
    /// The target created the volume (it reads as zeros: only allocated extents need copying).
    public var created: Bool
    /// Every extent must be copied: a new pairing over an existing volume, or changes were discarded.
    public var fullSyncNeeded: Bool

    public init(handle: UInt64, created: Bool, fullSyncNeeded: Bool) {
        self.handle = handle
        self.created = created
        self.fullSyncNeeded = fullSyncNeeded
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(handle)
        buffer.writeInteger(UInt8(created ? 1 : 0))
        buffer.writeInteger(UInt8(fullSyncNeeded ? 1 : 0))
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorEstablishReply {
        MirrorEstablishReply(
            handle: try buffer.readMirrorInteger(as: UInt64.self), created: try buffer.readMirrorInteger(as: UInt8.self) != 0,
            fullSyncNeeded: try buffer.readMirrorInteger(as: UInt8.self) != 0)
    }
}

/// Target → primary: the target's change map (`targetChanges`), one bit per extent of `extentSize`
/// bytes, little-endian 64-bit words. The target's extent size need not be the primary's.
public struct MirrorTargetChanges: MirrorMessage {
    public var extentSize: UInt64
    public var extentCount: UInt64
    public var words: [UInt64]

    public init(extentSize: UInt64, extentCount: UInt64, words: [UInt64]) {
        self.extentSize = extentSize
        self.extentCount = extentCount
        self.words = words
    }

    /// Extents whose bit is set, in order.
    public var extents: [UInt64] {
        var result: [UInt64] = []
        for (index, value) in words.enumerated() {
            var word = value
            while word != 0 {
                let extent = UInt64(index) * 64 + UInt64(word.trailingZeroBitCount)
                if extent < extentCount { result.append(extent) }
                word &= word - 1
            }
        }
        return result
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(extentSize)
        buffer.writeInteger(extentCount)
        buffer.writeInteger(UInt32(words.count))
        for word in words { buffer.writeInteger(word, endianness: .little) }
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorTargetChanges {
        let extentSize = try buffer.readMirrorInteger(as: UInt64.self)
        let extentCount = try buffer.readMirrorInteger(as: UInt64.self)
        let count = try buffer.readMirrorInteger(as: UInt32.self)
        guard extentSize > 0, extentSize.nonzeroBitCount == 1 else {
            throw MirrorPayloadError("a change map's extent size must be a power of two, not \(extentSize)")
        }
        guard UInt64(count) == (extentCount + 63) / 64, Int(count) * 8 <= buffer.readableBytes else {
            throw MirrorPayloadError("a change map of \(extentCount) extents cannot have \(count) words")
        }
        var words: [UInt64] = []
        words.reserveCapacity(Int(count))
        for _ in 0..<count { words.append(buffer.readInteger(endianness: .little)!) }
        return MirrorTargetChanges(extentSize: extentSize, extentCount: extentCount, words: words)
    }
}

/// A write frame: the data follows the 16-byte header to the end of the payload.
public struct MirrorWriteHeader: Sendable, Equatable {
    public var handle: UInt64
    public var offset: UInt64

    public init(handle: UInt64, offset: UInt64) {
        self.handle = handle
        self.offset = offset
    }

    /// Header + data, as one payload (the data is appended, not copied again by the encoder).
    public static func payload(handle: UInt64, offset: UInt64, data: ByteBuffer) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(16 + data.readableBytes)
        buffer.writeInteger(handle)
        buffer.writeInteger(offset)
        var data = data
        buffer.writeBuffer(&data)
        return buffer
    }

    /// Splits a write payload into its header and data.
    public static func split(_ payload: ByteBuffer) throws -> (MirrorWriteHeader, ByteBuffer) {
        var buffer = payload
        let handle = try buffer.readMirrorInteger(as: UInt64.self)
        let offset = try buffer.readMirrorInteger(as: UInt64.self)
        return (MirrorWriteHeader(handle: handle, offset: offset), buffer)
    }
}

/// A range of a paired volume: write-zeroes and trim frames.
public struct MirrorRange: MirrorMessage {
    public var handle: UInt64
    public var offset: UInt64
    public var length: UInt64

    public init(handle: UInt64, offset: UInt64, length: UInt64) {
        self.handle = handle
        self.offset = offset
        self.length = length
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(handle)
        buffer.writeInteger(offset)
        buffer.writeInteger(length)
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorRange {
        MirrorRange(
            handle: try buffer.readMirrorInteger(as: UInt64.self), offset: try buffer.readMirrorInteger(as: UInt64.self),
            length: try buffer.readMirrorInteger(as: UInt64.self))
    }
}

/// A frame about one paired volume and one value: flush (0), sever (0), remove (0), resize (new size),
/// synchronized (the generation both sides now hold), set-frame-size (bytes).
public struct MirrorHandleValue: MirrorMessage {
    public var handle: UInt64
    public var value: UInt64

    public init(handle: UInt64, value: UInt64 = 0) {
        self.handle = handle
        self.value = value
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(handle)
        buffer.writeInteger(value)
    }

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorHandleValue {
        MirrorHandleValue(handle: try buffer.readMirrorInteger(as: UInt64.self), value: try buffer.readMirrorInteger(as: UInt64.self))
    }
}

/// Target → primary: the status query's answer (the target's volumes, whether a target
/// volume is full or failed, whether replication is progressing).
public struct MirrorTargetStatus: MirrorMessage {
    public struct Volume: Sendable, Equatable, Codable {
        public var name: String
        public var size: UInt64
        public var allocatedBytes: UInt64
        /// "target" (paired with a primary) or "none".
        public var role: String
        /// "mirrored" (a primary is connected), "fractured" (paired, no primary), "" (unpaired).
        public var state: String
        /// The pool has no room left for this volume's writes.
        public var full: Bool
        /// The target's storage failed: nothing can be written.
        public var failed: Bool

        public init(name: String, size: UInt64, allocatedBytes: UInt64, role: String, state: String, full: Bool, failed: Bool) {
            self.name = name
            self.size = size
            self.allocatedBytes = allocatedBytes
            self.role = role
            self.state = state
            self.full = full
            self.failed = failed
        }
    }

    public var availableBytes: UInt64
    public var volumes: [Volume]

    public init(availableBytes: UInt64, volumes: [Volume]) {
        self.availableBytes = availableBytes
        self.volumes = volumes
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(availableBytes)
        buffer.writeInteger(UInt32(volumes.count))
        for volume in volumes {
            buffer.writeMirrorString(volume.name)
            buffer.writeInteger(volume.size)
            buffer.writeInteger(volume.allocatedBytes)
            buffer.writeMirrorString(volume.role)
            buffer.writeMirrorString(volume.state)
            buffer.writeInteger(UInt8((volume.full ? 1 : 0) | (volume.failed ? 2 : 0)))
        }
    }

    /// Most volumes one status reply lists (a pool's practical volume count is far lower).
    public static let maximumVolumes: UInt32 = 65536

    public static func decode(from buffer: inout ByteBuffer) throws -> MirrorTargetStatus {
        let available = try buffer.readMirrorInteger(as: UInt64.self)
        let count = try buffer.readMirrorInteger(as: UInt32.self)
        guard count <= maximumVolumes else { throw MirrorPayloadError("status lists \(count) volumes") }
        var volumes: [Volume] = []
        for _ in 0..<count {
            let name = try buffer.readMirrorString()
            let size = try buffer.readMirrorInteger(as: UInt64.self)
            let allocated = try buffer.readMirrorInteger(as: UInt64.self)
            let role = try buffer.readMirrorString()
            let state = try buffer.readMirrorString()
            let bits = try buffer.readMirrorInteger(as: UInt8.self)
            volumes.append(
                Volume(name: name, size: size, allocatedBytes: allocated, role: role, state: state, full: bits & 1 != 0, failed: bits & 2 != 0))
        }
        return MirrorTargetStatus(availableBytes: available, volumes: volumes)
    }
}
